"""The demo manifest `quotagate up --demo` applies (examples/local-demo.yaml links here)."""
