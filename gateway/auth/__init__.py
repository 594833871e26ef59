"""Who may use pullguard.

- :mod:`.tokens`: admin tokens and roles for the gRPC ``Gateway`` service and
  the console's JSON API (``auth.admin_tokens``);
- :mod:`.logins`: HTTP basic auth on the front door (``auth.htpasswd``);
- :mod:`.identity`: the user of the pull being served, for its decision record;
- :mod:`.exposure`: what may listen beyond loopback, checked before start;
- :mod:`.front_tls`: the front door's HTTPS context, reloaded on SIGHUP;
- :mod:`.client`: the CLI's side: a token on its gRPC calls, ``token create``.
"""
