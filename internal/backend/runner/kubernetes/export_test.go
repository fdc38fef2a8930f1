package kubernetes

// For the cluster tests (package kubernetes_test, which imports testenv and
// so, through the backend, this package).
var (
	ObjectName  = objectName
	SecretName  = secretName
	ParseHandle = parseHandle
)

const (
	SpecKey        = specKey
	TokenKey       = tokenKey
	URLKey         = urlKey
	ContainerFetch = containerFetch
	ContainerNode  = containerNode
)

// Handle is the decoded node handle.
type Handle = handle
