# Minimal Consul ACL policy for voltha-gevent nodes (Consul 1.8+), with the health-check
# feature on (VOLTHA_CHECK_TTL > 0, the default).
#
# Replace "service/voltha" with your VOLTHA_PREFIX, and "voltha-" below only if you changed
# nothing else: the node registers an agent service named "voltha-<instance_id>" whose TTL
# check it keeps passing and ties to its session.
#
#   consul acl policy create -name voltha -rules @deploy/consul-policy.hcl
#   consul acl token create -description "voltha node" -policy-name voltha
#
# Give the token's SecretID to the node in VOLTHA_CONSUL_TOKEN or a file named by
# --consul-token-file. Checked against a real ACL-enabled (default deny) Consul 1.8.7 agent
# by tests/integration/test_acl_real.py: no node_prefix right is needed.

# Every key the nodes read and write: leader, members/, workload/, assignments/, owners/.
key_prefix "service/voltha/" {
  policy = "write"
}

# Create, renew and destroy the node's session (sessions are named by the agent's node).
session_prefix "" {
  policy = "write"
}

# Health-check feature only: register/deregister the "voltha-<instance_id>" agent service
# with its TTL check and pass that check. Drop this block when VOLTHA_CHECK_TTL=0
# (see deploy/consul-policy-no-check.hcl).
service_prefix "voltha-" {
  policy = "write"
}
