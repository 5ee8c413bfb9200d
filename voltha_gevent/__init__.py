"""voltha-gevent: share a workload among identical service instances through Consul."""

__version__ = "0.1.0"
