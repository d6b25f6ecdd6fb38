"""Generated gRPC stubs (see scripts/generate_grpc.py)."""
