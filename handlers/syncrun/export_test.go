package syncrun

// LeaseOwner is h's id in the leases it holds, for tests that stage a lease.
func LeaseOwner(h *Handler) string { return h.owner }
