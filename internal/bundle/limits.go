package bundle

import "fmt"

// Limits bound what the owner side packs (pack.Pack) and what Unpack and
// Check accept. A zero (or
// negative) field means the default from DefaultLimits, so Limits{} is a
// sensible value. The node must accept at least what owners pack: use the
// same limits on both sides, or larger ones on the node.
type Limits struct {
	// MaxTotalSize bounds the sum of the sizes of all files, in bytes.
	MaxTotalSize int64
	// MaxFiles bounds the number of archive entries: files and directories
	// together (the root directory itself is not an entry).
	MaxFiles int
	// MaxPathLen bounds the length of an entry's path in bytes (the
	// slash-separated path relative to the code directory).
	MaxPathLen int
	// MaxFileSize bounds the size of a single file, in bytes.
	MaxFileSize int64
}

// Default limits: generous for a web app with its dependencies and assets, and
// small enough that a hostile archive cannot exhaust a node.
const (
	DefaultMaxTotalSize int64 = 2 << 30 // 2 GiB
	DefaultMaxFiles           = 100_000
	DefaultMaxPathLen         = 1024
	DefaultMaxFileSize  int64 = 2 << 30 // 2 GiB: one large model or asset file is fine
)

// DefaultLimits returns the limits used for zero fields.
func DefaultLimits() Limits {
	return Limits{
		MaxTotalSize: DefaultMaxTotalSize,
		MaxFiles:     DefaultMaxFiles,
		MaxPathLen:   DefaultMaxPathLen,
		MaxFileSize:  DefaultMaxFileSize,
	}
}

// WithDefaults returns l with its zero or negative fields set to the
// defaults: the limits in force.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = d.MaxTotalSize
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxPathLen <= 0 {
		l.MaxPathLen = d.MaxPathLen
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = d.MaxFileSize
	}
	return l
}

// LimitError reports that a tree or an archive goes over one of the Limits;
// callers can find it with errors.As.
type LimitError struct {
	Limit   string // field of Limits: "MaxTotalSize", "MaxFiles", "MaxPathLen" or "MaxFileSize"
	Max     int64  // the limit in force
	Path    string // the entry that went over, when there is one
	Packing bool   // true in pack.Pack (owner side), false in Unpack/Check (node side)
}

func (e *LimitError) Error() string {
	var what string
	switch e.Limit {
	case "MaxTotalSize":
		what = fmt.Sprintf("the files add up to more than %s, the total size limit", formatBytes(e.Max))
	case "MaxFiles":
		what = fmt.Sprintf("more than %d files and directories", e.Max)
	case "MaxPathLen":
		what = fmt.Sprintf("the path is longer than %d bytes", e.Max)
	case "MaxFileSize":
		what = fmt.Sprintf("the file is larger than %s, the per-file limit", formatBytes(e.Max))
	default:
		what = fmt.Sprintf("over the limit %s = %d", e.Limit, e.Max)
	}
	prefix := ""
	if e.Path != "" {
		prefix = e.Path + ": "
	}
	if e.Packing {
		return fmt.Sprintf("%s%s (bundle limit %s); remove files or add them to .mseignore, or raise the limit", prefix, what, e.Limit)
	}
	return fmt.Sprintf("%sbundle archive refused: %s (bundle limit %s); the node's limits must be at least the ones the bundle was packed with", prefix, what, e.Limit)
}

func formatBytes(n int64) string {
	const (
		kib = 1 << 10
		mib = 1 << 20
		gib = 1 << 30
	)
	switch {
	case n >= gib && n%gib == 0:
		return fmt.Sprintf("%d GiB", n/gib)
	case n >= gib:
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	case n >= mib && n%mib == 0:
		return fmt.Sprintf("%d MiB", n/mib)
	case n >= mib:
		return fmt.Sprintf("%.1f MiB", float64(n)/mib)
	case n >= kib && n%kib == 0:
		return fmt.Sprintf("%d KiB", n/kib)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
