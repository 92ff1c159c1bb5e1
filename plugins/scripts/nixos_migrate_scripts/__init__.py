"""nixos-migrate plugin `scripts`: RFC 155 style dated migrations written by hand."""
