# Minimal Consul ACL policy for voltha-gevent nodes run with VOLTHA_CHECK_TTL=0 (sessions
# tied to their TTL and serfHealth only, no agent service): KV under the prefix and sessions.
# Replace "service/voltha" with your VOLTHA_PREFIX. See deploy/consul-policy.hcl.

key_prefix "service/voltha/" {
  policy = "write"
}

session_prefix "" {
  policy = "write"
}
