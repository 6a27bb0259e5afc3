"""A small HTTP/2 server for gRPC on an asyncio Protocol: frames parsed by hand, HPACK blocks decoded once per
distinct block, responses written from precomputed header bytes (the opt-in ``grpc_server: h2``)."""
