"""Peer systems the benches compare voltha-gevent with: worker programs that write the same ledger."""
