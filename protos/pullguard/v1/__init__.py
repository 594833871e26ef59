"""Generated protobuf and gRPC code for pullguard.v1 (see `make protos`)."""
