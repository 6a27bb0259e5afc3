"""The gRPC front end: inference.GRPCInferenceService, TF Serving's services, health and reflection."""
