// Package runtimes holds the operator's runtime catalog: the OCI images,
// named by digest, that nodes run in (MSE's `docker` key). This package is
// the catalog's data and the rules that match an owner's reference against
// it; it has no dependencies so that the CLI and the backend share it. Images
// themselves (build, import, extraction, verification) live in
// runtimes/image. The format is documented in docs/runtimes.md.
package runtimes

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/mse-in-go/mse/internal/atomicfile"
)

// Server kinds: which Python app server a runtime offers.
const (
	KindWSGI = "wsgi" // python_application is a WSGI callable (gunicorn)
	KindASGI = "asgi" // python_application is an ASGI app (uvicorn)
	KindAny  = "any"  // both servers, detected per app; entrypoint apps too
)

// Entry is one runtime of the catalog.
type Entry struct {
	// Name is the short name owners may use (`docker = "flask"`).
	Name string `json:"name"`
	// Image is the reference owners put in mse.toml, without digest
	// (`docker = "mse/flask:bookworm"`).
	Image string `json:"image"`
	// Digest is the OCI manifest digest, "sha256:" and 64 lowercase hex.
	Digest string `json:"digest"`
	// Kind is KindWSGI, KindASGI or KindAny.
	Kind string `json:"kind"`
	// Packages are what the image holds (Debian package names, with
	// versions when known: "python3-flask=2.2.2-3").
	Packages []string `json:"packages"`
	// Size is the uncompressed size of the root filesystem in bytes.
	Size int64 `json:"size,omitempty"`
}

// ErrUnknown is wrapped by Match when a reference names no runtime.
var ErrUnknown = errors.New("runtime not offered")

// ValidDigest reports whether d is "sha256:" and 64 lowercase hex digits.
func ValidDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// DigestBytes returns the 32 raw bytes of a valid digest.
func DigestBytes(d string) ([]byte, error) {
	if !ValidDigest(d) {
		return nil, fmt.Errorf("runtime digest %q is not sha256: and 64 lowercase hex digits", d)
	}
	return hex.DecodeString(d[len("sha256:"):])
}

// Validate checks an entry's own consistency.
func (e *Entry) Validate() error {
	switch {
	case !validName(e.Name):
		return fmt.Errorf("runtime name %q: use 1-64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", e.Name)
	case e.Image == "" || strings.ContainsAny(e.Image, " \t\n@") || len(e.Image) > 255:
		return fmt.Errorf("runtime %s: image reference %q must be a name[:tag] without digest or spaces", e.Name, e.Image)
	case !ValidDigest(e.Digest):
		return fmt.Errorf("runtime %s: digest %q is not sha256: and 64 lowercase hex digits", e.Name, e.Digest)
	}
	switch e.Kind {
	case KindWSGI, KindASGI, KindAny:
	default:
		return fmt.Errorf("runtime %s: kind %q is not %s, %s or %s", e.Name, e.Kind, KindWSGI, KindASGI, KindAny)
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case (r == '.' || r == '_' || r == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// Ref is a parsed owner reference: a name or image, optionally pinned.
type Ref struct {
	Name   string // runtime name or image reference, without digest
	Digest string // "sha256:…" when pinned, else ""
}

// ParseRef parses "NAME", "IMAGE[:TAG]", either followed by "@sha256:HEX".
func ParseRef(s string) (Ref, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Ref{}, errors.New("the runtime reference is empty")
	}
	if len(s) > 512 || strings.ContainsAny(s, " \t\r\n") {
		return Ref{}, fmt.Errorf("the runtime reference %q has spaces or is longer than 512 bytes", s)
	}
	name, digest, pinned := strings.Cut(s, "@")
	if pinned {
		if !ValidDigest(digest) {
			return Ref{}, fmt.Errorf("the runtime reference %q: the part after @ must be sha256: and 64 lowercase hex digits", s)
		}
	}
	if name == "" {
		return Ref{}, fmt.Errorf("the runtime reference %q names no image", s)
	}
	return Ref{Name: name, Digest: digest}, nil
}

func (r Ref) String() string {
	if r.Digest == "" {
		return r.Name
	}
	return r.Name + "@" + r.Digest
}

// normalizeImage drops the registry defaults a user may or may not write:
// "docker.io/", "library/" and ":latest".
func normalizeImage(s string) string {
	s = strings.TrimPrefix(s, "docker.io/")
	s = strings.TrimPrefix(s, "index.docker.io/")
	s = strings.TrimPrefix(s, "library/")
	if i := strings.LastIndex(s, ":"); i < 0 || strings.Contains(s[i:], "/") {
		s += ":latest"
	}
	return s
}

// Match finds the runtime a reference names among entries: by name, by
// image reference, or (a bare digest-pinned reference) by digest. A pinned
// reference must name an entry whose digest is exactly the pin. When nothing
// matches, the error wraps ErrUnknown and lists what is offered, closest
// first.
func Match(entries []Entry, ref string) (Entry, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return Entry{}, err
	}
	var found []Entry
	for _, e := range entries {
		if e.Name == r.Name || normalizeImage(e.Image) == normalizeImage(r.Name) {
			found = append(found, e)
		}
	}
	if len(found) == 0 {
		return Entry{}, unknown(entries, r)
	}
	if r.Digest != "" {
		for _, e := range found {
			if e.Digest == r.Digest {
				return e, nil
			}
		}
		return Entry{}, fmt.Errorf("%w: %s is pinned to %s, but the operator's %s is %s; remove the pin to take the operator's image, or ask the operator for that digest",
			ErrUnknown, r.Name, short(r.Digest), found[0].Image, found[0].Digest)
	}
	return found[0], nil
}

func short(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12] + "…"
	}
	return d
}

func unknown(entries []Entry, r Ref) error {
	if len(entries) == 0 {
		return fmt.Errorf("%w: %q is not in the catalog, and the operator offers no runtime yet; ask the operator to add one (mse-backend runtime build)", ErrUnknown, r.Name)
	}
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b Entry) int {
		return distance(r.Name, a) - distance(r.Name, b)
	})
	var offered []string
	for _, e := range sorted {
		offered = append(offered, fmt.Sprintf("%s (%s, %s)", e.Image, e.Name, e.Kind))
	}
	return fmt.Errorf("%w: %q is not in the operator's catalog; did you mean %q? Offered: %s (see `mse cloud runtimes`)",
		ErrUnknown, r.Name, sorted[0].Image, strings.Join(offered, ", "))
}

// distance is how far a reference is from an entry: the smaller edit
// distance to its name, its image, or its image's last path element.
func distance(ref string, e Entry) int {
	ref = strings.ToLower(ref)
	img := strings.ToLower(e.Image)
	d := min(levenshtein(ref, e.Name), levenshtein(ref, img))
	base := img
	if i := strings.LastIndex(base, "/"); i >= 0 {
		base = base[i+1:]
	}
	rb := ref
	if i := strings.LastIndex(rb, "/"); i >= 0 {
		rb = rb[i+1:]
	}
	d = min(d, levenshtein(rb, base), levenshtein(strings.SplitN(rb, ":", 2)[0], e.Name))
	// A reference that mentions the entry's name is close (mse-flask ~ flask).
	if strings.Contains(rb, e.Name) {
		d = min(d, 1)
	}
	return d
}

func levenshtein(a, b string) int {
	if len(a) > 256 || len(b) > 256 {
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Catalog is the operator's catalog file: a JSON list of entries.
type Catalog struct {
	path    string
	entries []Entry
}

// MaxCatalogSize bounds the catalog file.
const MaxCatalogSize = 4 << 20

// Load reads a catalog file; a missing file is an empty catalog.
func Load(path string) (*Catalog, error) {
	c := &Catalog{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("runtime catalog: %w", err)
	}
	if len(b) > MaxCatalogSize {
		return nil, fmt.Errorf("runtime catalog %s is larger than %d bytes", path, MaxCatalogSize)
	}
	var doc struct {
		Runtimes []Entry `json:"runtimes"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("runtime catalog %s: %w", path, err)
	}
	seen := map[string]bool{}
	for _, e := range doc.Runtimes {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("runtime catalog %s: %w", path, err)
		}
		if seen[e.Name] || seen["image:"+normalizeImage(e.Image)] {
			return nil, fmt.Errorf("runtime catalog %s: runtime %s (%s) is listed twice", path, e.Name, e.Image)
		}
		seen[e.Name], seen["image:"+normalizeImage(e.Image)] = true, true
	}
	c.entries = doc.Runtimes
	return c, nil
}

// Entries returns the catalog's entries in file order.
func (c *Catalog) Entries() []Entry { return slices.Clone(c.entries) }

// Put adds e, or replaces the entry of the same name, and saves the file.
func (c *Catalog) Put(e Entry) error {
	if err := e.Validate(); err != nil {
		return err
	}
	next := slices.Clone(c.entries)
	replaced := false
	for i, o := range next {
		if o.Name == e.Name {
			next[i], replaced = e, true
		} else if normalizeImage(o.Image) == normalizeImage(e.Image) {
			return fmt.Errorf("runtime catalog: image %s is already offered as %s; remove that one first", e.Image, o.Name)
		}
	}
	if !replaced {
		next = append(next, e)
	}
	return c.save(next)
}

// Remove drops the entry named name and saves the file.
func (c *Catalog) Remove(name string) (Entry, error) {
	for i, e := range c.entries {
		if e.Name == name {
			next := slices.Delete(slices.Clone(c.entries), i, i+1)
			return e, c.save(next)
		}
	}
	return Entry{}, fmt.Errorf("%w: no runtime named %q (offered: %s)", ErrUnknown, name, strings.Join(c.names(), ", "))
}

func (c *Catalog) names() []string {
	var n []string
	for _, e := range c.entries {
		n = append(n, e.Name)
	}
	return n
}

func (c *Catalog) save(entries []Entry) error {
	if entries == nil {
		entries = []Entry{}
	}
	b, err := json.MarshalIndent(struct {
		Runtimes []Entry `json:"runtimes"`
	}{entries}, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(c.path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("runtime catalog: %w", err)
	}
	c.entries = entries
	return nil
}
