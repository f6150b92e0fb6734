"""Access: who may change shared state on a public deploy (the owner), and how they prove it."""
