"""The shared binary cache: signed manifests and content-addressed files on any DVC remote.

Remote layout: `files/<xxh3>` (each distinct file once, whatever artifacts hold it) and
`manifests/<key>.json` (one per derivation key, ed25519-signed). A build substitutes from it before
building (substitute.py); `modelbuild push` publishes to it (push.py).
"""
