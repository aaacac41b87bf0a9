"""The client's own protobuf descriptor pool: the same message names as tritonclient's (and the server's) coexist."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
