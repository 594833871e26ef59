#!/usr/bin/env node
// Real keyless sigstore bundles for pullguard's tests, made offline.
//
// @sigstore/sign does the signing exactly as it does against the public
// good instance: an ephemeral P-256 key, a Fulcio certificate for an OIDC
// identity, a Rekor entry with its signed entry timestamp and inclusion proof
// (and, with "tsa": true, an RFC 3161 timestamp). Fulcio, its CT log, Rekor
// and the TSA are @sigstore/mock's, answering inside this process through
// nock; nock refuses every other connection, so nothing leaves the machine.
//
// Usage: node keyless.js SPEC.json
//
// SPEC is {"out_dir": DIR, "tsa": false, "jobs": [JOB, ...]}; a JOB is
//   {"name": N, "kind": "message" | "dsse", "identity": SUBJECT,
//    "issuer": ISSUER, "payload_b64": BYTES, "payload_type": TYPE,
//    "bundle_version": "0.3" (default) | "0.2"}
// "message" signs the bytes (give the image manifest: the bundle's
// messageDigest is then the manifest digest); "dsse" signs them as a DSSE
// envelope of payload_type (an in-toto statement, default). Every job's
// bundle goes to DIR/N.sigstore.json, and DIR/trusted_root.json holds the
// mock's CA certificate, CT log key, Rekor key and TSA chain: one root per
// run, so bundles made in another run do not verify under it.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const nock = require('nock');
const mock = require('@sigstore/mock');
const sign = require('@sigstore/sign');
const bundleLib = require('@sigstore/bundle');

// Names only: nock answers for them, nothing resolves them.
const FULCIO_URL = 'https://fulcio.pullguard.test';
const REKOR_URL = 'https://rekor.pullguard.test';
const TSA_URL = 'https://tsa.pullguard.test';

function b64(bytes) {
  return Buffer.from(bytes).toString('base64');
}

function spki(keyObject) {
  return keyObject.export({ format: 'der', type: 'spki' });
}

// An unsigned OIDC token: the mock Fulcio reads its claims without checking a
// signature, which is the point of a test CA.
function identityToken(identity, issuer) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  return [
    part({ alg: 'none', typ: 'JWT' }),
    part({ iss: issuer, sub: identity, aud: 'sigstore', iat: now, exp: now + 600 }),
    '',
  ].join('.');
}

function trustedRoot(parts, validFrom) {
  const start = { start: validFrom.toISOString() };
  const key = (der) => ({
    rawBytes: b64(der),
    keyDetails: 'PKIX_ECDSA_P256_SHA_256',
    validFor: start,
  });
  const root = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [
      {
        baseUrl: REKOR_URL,
        hashAlgorithm: 'SHA2_256',
        publicKey: key(parts.tlogKey),
        logId: { keyId: b64(crypto.createHash('sha256').update(parts.tlogKey).digest()) },
      },
    ],
    certificateAuthorities: [
      {
        subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
        uri: FULCIO_URL,
        certChain: { certificates: [{ rawBytes: b64(parts.caRoot) }] },
        validFor: start,
      },
    ],
    ctlogs: [
      {
        baseUrl: 'https://ctfe.pullguard.test',
        hashAlgorithm: 'SHA2_256',
        publicKey: key(parts.ctKey),
        logId: { keyId: b64(parts.ctLogId) },
      },
    ],
    timestampAuthorities: [],
  };
  if (parts.tsa) {
    root.timestampAuthorities.push({
      subject: { organization: 'sigstore.mock', commonName: 'tsa' },
      uri: TSA_URL,
      certChain: {
        certificates: [{ rawBytes: b64(parts.tsa.intCertificate) }, { rawBytes: b64(parts.tsa.rootCertificate) }],
      },
      validFor: start,
    });
  }
  return root;
}

function pemToDER(pem) {
  return Buffer.from(pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, ''), 'base64');
}

// The mock Fulcio wraps its PEM at another width than the real one (Go's
// encoding/pem: 64 characters), and @sigstore/sign puts that PEM text into
// the Rekor entry as it is. Verifiers rebuild the entry from the certificate
// with 64-character lines, so the certificate is re-wrapped before use.
class Pem64Signer {
  constructor(inner) {
    this.inner = inner;
  }

  async sign(data) {
    const signature = await this.inner.sign(data);
    const der = pemToDER(signature.key.certificate);
    const lines = der.toString('base64').match(/.{1,64}/g).join('\n');
    const certificate = `-----BEGIN CERTIFICATE-----\n${lines}\n-----END CERTIFICATE-----\n`;
    return { ...signature, key: { ...signature.key, certificate } };
  }
}

// @sigstore/sign always writes a message-signature bundle as v0.2 (with an
// x509CertificateChain); v0.3 carries the leaf alone, as cosign v3 does.
class MessageV03Builder extends sign.MessageSignatureBundleBuilder {
  async package(artifact, signature) {
    return bundleLib.toMessageSignatureBundle({
      digest: crypto.createHash('sha256').update(artifact.data).digest(),
      signature: signature.signature,
      certificate: pemToDER(signature.key.certificate),
      certificateChain: false,
    });
  }
}

// Proto3 JSON leaves out zero values; the mock log has one entry, so its
// inclusion proof has logIndex 0 and no hashes, and both vanish. Readers with
// required fields (sigstore-python) want them written out.
function withProofDefaults(json) {
  for (const entry of json.verificationMaterial.tlogEntries || []) {
    if (entry.inclusionProof) {
      entry.inclusionProof = { logIndex: '0', hashes: [], ...entry.inclusionProof };
    }
  }
  return json;
}

// The mock Rekor logs a proposed entry exactly as sent. Real Rekor stores
// the canonical form of its entry type instead, and for dsse/0.0.1 that is
// not the proposal: it keeps the envelope's and payload's hashes and the
// signatures with their verifiers (rekor pkg/types/dsse/v0.0.1). Verifiers
// check that form, so this handler canonicalises dsse proposals as Rekor
// does and hands everything else to the mock's handler unchanged.
function rekorCanonicalHandler(tlog) {
  const inner = mock.rekorHandler(tlog, { strict: true });
  const sha256 = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');
  return {
    path: inner.path,
    fn: async (body) => {
      const proposed = JSON.parse(body);
      if (proposed.kind !== 'dsse') {
        return inner.fn(body);
      }
      const content = proposed.spec.proposedContent;
      const envelope = JSON.parse(content.envelope);
      const canonical = {
        apiVersion: proposed.apiVersion,
        kind: 'dsse',
        spec: {
          envelopeHash: { algorithm: 'sha256', value: sha256(Buffer.from(content.envelope)) },
          payloadHash: {
            algorithm: 'sha256',
            value: sha256(Buffer.from(envelope.payload, 'base64')),
          },
          signatures: envelope.signatures.map((signature) => ({
            signature: signature.sig,
            verifier: content.verifiers[0],
          })),
        },
      };
      return inner.fn(JSON.stringify(canonical));
    },
  };
}

function intercept(base, handler) {
  // persist(): one interceptor answers every job of the run.
  nock(base)
    .persist()
    .post(handler.path)
    .reply(async (_uri, body) => {
      const text = typeof body === 'string' ? body : JSON.stringify(body);
      const { statusCode, response, contentType } = await handler.fn(text);
      return [statusCode, response, { 'Content-Type': contentType || 'text/plain' }];
    });
}

async function main() {
  const specPath = process.argv[2];
  if (!specPath) {
    throw new Error('usage: node keyless.js SPEC.json');
  }
  const spec = JSON.parse(fs.readFileSync(specPath, 'utf8'));
  nock.disableNetConnect();
  // Validity starts a day back so that clock skew never makes the root younger than a cert.
  const validFrom = new Date(Date.now() - 24 * 3600 * 1000);

  const caKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const tlogKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const ctlog = await mock.initializeCTLog(caKeys);
  const ca = await mock.initializeCA(caKeys, ctlog);
  const tlog = await mock.initializeTLog(REKOR_URL, tlogKeys);
  intercept(FULCIO_URL, mock.fulcioHandler(ca, { strict: true }));
  intercept(REKOR_URL, rekorCanonicalHandler(tlog));
  let tsa = null;
  if (spec.tsa) {
    tsa = await mock.initializeTSA(crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }));
    intercept(TSA_URL, mock.tsaHandler(tsa, { strict: true }));
  }

  fs.mkdirSync(spec.out_dir, { recursive: true });
  const root = trustedRoot(
    {
      caRoot: ca.rootCertificate,
      ctKey: ctlog.publicKey,
      ctLogId: ctlog.logID,
      tlogKey: tlog.publicKey,
      tsa,
    },
    validFrom,
  );
  fs.writeFileSync(path.join(spec.out_dir, 'trusted_root.json'), JSON.stringify(root, null, 2));

  for (const job of spec.jobs) {
    const signer = new Pem64Signer(
      new sign.FulcioSigner({
        fulcioBaseURL: FULCIO_URL,
        identityProvider: { getToken: async () => identityToken(job.identity, job.issuer) },
      }),
    );
    const witnesses = [new sign.RekorWitness({ rekorBaseURL: REKOR_URL, entryType: 'dsse' })];
    if (tsa) {
      witnesses.push(new sign.TSAWitness({ tsaBaseURL: TSA_URL }));
    }
    const data = Buffer.from(job.payload_b64, 'base64');
    const v02 = job.bundle_version === '0.2';
    let bundle;
    if (job.kind === 'message') {
      const Builder = v02 ? sign.MessageSignatureBundleBuilder : MessageV03Builder;
      bundle = await new Builder({ signer, witnesses }).create({ data });
    } else if (job.kind === 'dsse') {
      const type = job.payload_type || 'application/vnd.in-toto+json';
      const builder = new sign.DSSEBundleBuilder({ signer, witnesses, certificateChain: v02 });
      bundle = await builder.create({ data, type });
    } else {
      throw new Error(`unknown kind ${job.kind}`);
    }
    const json = withProofDefaults(bundleLib.bundleToJSON(bundle));
    fs.writeFileSync(path.join(spec.out_dir, `${job.name}.sigstore.json`), JSON.stringify(json));
  }
}

main().catch((err) => {
  process.stderr.write(`keyless.js: ${err && err.stack ? err.stack : err}\n`);
  if (err && err.cause) {
    process.stderr.write(`cause: ${err.cause.stack || err.cause}\n`);
  }
  process.exit(1);
});
