package runner

// BundleServer is implemented by runners whose nodes fetch their encrypted
// bundle from the backend (GET /v1/nodes/{app_id}/bundle) with a per-node
// credential, instead of reading SpawnSpec.BundlePath on this machine: the
// backend's bundle store need not be local to them.
type BundleServer interface {
	// CheckFetchToken reports whether token is the bundle-fetch credential
	// of the node of handle, comparing in constant time.
	CheckFetchToken(handle []byte, token string) bool
}

// NodeQuoter is implemented by runners whose sim nodes get their quotes
// from the backend (POST /v1/nodes/{app_id}/quote) instead of a quoting
// service the runner serves beside them.
type NodeQuoter interface {
	// SimQuote is a sim quote for the node of handle binding reportData:
	// the runner states the node's identity (measurement, runtime), the
	// caller only the report data. The caller has checked the node's
	// credential (BundleServer.CheckFetchToken).
	SimQuote(handle []byte, reportData [64]byte) ([]byte, error)
}
