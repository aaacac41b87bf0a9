"""The Open Inference Protocol's gRPC messages for GrpcClient, generated from the server's inference.proto."""
