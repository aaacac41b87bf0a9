"""The private protobuf descriptor pool that inference.proto's generated module registers in.

tritonclient.grpc registers Triton's grpc_service.proto in protobuf's default pool, with the same symbols
(inference.ModelInferRequest, ...): registering ours there too fails in any process that imports both, as
the tests do. Messages of a private pool serialise the same bytes; server reflection is given this pool.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
