"""`eald-verify-port`: compare a port with the original code on tiny random weights."""
