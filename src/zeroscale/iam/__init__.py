"""Scoped credentials: IAM users, access keys and inline policies (an IAM-compatible subset served in IAM's
query protocol), and the policy check every signed request goes through."""
