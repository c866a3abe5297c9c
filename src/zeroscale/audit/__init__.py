"""The audit trail: every control-plane call, CloudTrail-like (``zeroscale audit``)."""
