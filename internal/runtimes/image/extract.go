package image

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// ErrUnsafe is wrapped by every refusal of a layer entry that could escape
// the tree or is not allowed in a runtime (devices, fifos, ...).
var ErrUnsafe = errors.New("unsafe layer entry")

// ErrLimit is wrapped when an image exceeds a Limits bound.
var ErrLimit = errors.New("image over the store's limits")

// Entry types of an Index.
const (
	TypeDir     = "d"
	TypeFile    = "f"
	TypeSymlink = "l"
)

// IndexEntry is what the index knows about one path of the tree.
type IndexEntry struct {
	Path   string `json:"p"`           // slash-separated, relative, "" is the root
	Type   string `json:"t"`           // TypeDir, TypeFile or TypeSymlink
	Mode   uint32 `json:"m"`           // permission bits as extracted
	Size   int64  `json:"s,omitempty"` // regular files
	SHA256 string `json:"h,omitempty"` // regular files: hex SHA-256 of the content
	Link   string `json:"l,omitempty"` // symlinks: the target
}

// Index is the extracted tree as the layers described it: every path with
// its type, mode and (regular files) content hash. Build one with NewIndex
// and pass it to every ExtractLayer call of one image, in layer order.
type Index struct {
	entries  map[string]*IndexEntry
	children map[string]map[string]struct{} // dir → child base names
	created  map[string]bool                // paths written by the current layer
	opaqued  map[string]bool                // opaque dirs applied by the current layer
	nEntries int                            // tar entries read, over all layers
	nBytes   int64                          // file bytes written, over all layers
}

// NewIndex returns the index of an empty tree.
func NewIndex() *Index {
	ix := &Index{
		entries:  map[string]*IndexEntry{"": {Path: "", Type: TypeDir, Mode: 0o755}},
		children: map[string]map[string]struct{}{"": {}},
	}
	return ix
}

// Entries returns the entries sorted by path (the root "" first).
func (ix *Index) Entries() []IndexEntry {
	out := make([]IndexEntry, 0, len(ix.entries))
	for _, e := range ix.entries {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Lookup returns the entry of a path.
func (ix *Index) Lookup(p string) (IndexEntry, bool) {
	e, ok := ix.entries[p]
	if !ok {
		return IndexEntry{}, false
	}
	return *e, true
}

// Size is the sum of the sizes of the regular files of the tree (a file
// with several hard links counts once per name).
func (ix *Index) Size() int64 {
	var n int64
	for _, e := range ix.entries {
		n += e.Size
	}
	return n
}

// Len is the number of paths in the tree, the root included.
func (ix *Index) Len() int { return len(ix.entries) }

func (ix *Index) add(e *IndexEntry) {
	ix.entries[e.Path] = e
	if e.Path != "" {
		dir, base := splitPath(e.Path)
		ix.children[dir][base] = struct{}{}
	}
	if e.Type == TypeDir {
		if ix.children[e.Path] == nil {
			ix.children[e.Path] = map[string]struct{}{}
		}
	}
	if ix.created != nil {
		ix.created[e.Path] = true
	}
}

// drop removes p and everything under it from the index.
func (ix *Index) drop(p string) {
	for c := range ix.children[p] {
		ix.drop(join(p, c))
	}
	delete(ix.children, p)
	delete(ix.entries, p)
	if p != "" {
		dir, base := splitPath(p)
		delete(ix.children[dir], base)
	}
}

func splitPath(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func join(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}

// cleanName turns a tar name into a relative slash path ("" is the root), or
// refuses it.
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: %q is an absolute path", ErrUnsafe, name)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: %q contains a NUL byte", ErrUnsafe, name)
	}
	var parts []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			return "", fmt.Errorf("%w: %q contains \"..\"", ErrUnsafe, name)
		default:
			if len(c) > 255 {
				return "", fmt.Errorf("%w: %q has a component longer than 255 bytes", ErrUnsafe, name)
			}
			parts = append(parts, c)
		}
	}
	p := strings.Join(parts, "/")
	if len(p) > 4000 {
		return "", fmt.Errorf("%w: %q is longer than 4000 bytes", ErrUnsafe, name)
	}
	return p, nil
}

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// ExtractLayer extracts one uncompressed layer tar stream into dir (which
// must exist and hold only what earlier ExtractLayer calls with the same idx
// wrote), applying OCI whiteouts against the earlier layers and recording
// every path in idx. It refuses, with an error wrapping ErrUnsafe and naming
// the entry: absolute names, "..", writing through a symlink or a file,
// hard links to outside the tree or to entries not extracted yet, symlinks
// whose relative target climbs above the root, devices, fifos and unknown
// entry types. Entries over lim wrap ErrLimit. Setuid, setgid and sticky
// bits and group/other write bits are stripped; directories are 0755. File
// mtimes are kept (Python compares them with its .pyc files); owners are
// not: everything belongs to the extracting user. A nil idx is a fresh one.
func ExtractLayer(r io.Reader, dir string, lim Limits, idx *Index) error {
	lim = lim.withDefaults()
	if idx == nil {
		idx = NewIndex()
	}
	idx.created = map[string]bool{}
	idx.opaqued = map[string]bool{}
	defer func() { idx.created, idx.opaqued = nil, nil }()
	x := &extractor{root: dir, lim: lim, ix: idx}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the layer tar: %w", err)
		}
		idx.nEntries++
		if idx.nEntries > lim.MaxFiles {
			return fmt.Errorf("%w: more than %d entries (at %q); raise MaxFiles if the image is trusted", ErrLimit, lim.MaxFiles, hdr.Name)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
}

type extractor struct {
	root string
	lim  Limits
	ix   *Index
	buf  []byte
}

func (x *extractor) full(p string) string {
	if p == "" {
		return x.root
	}
	return filepath.Join(x.root, filepath.FromSlash(p))
}

// parents makes sure every parent of p is a directory of the tree, creating
// missing ones; it refuses a parent that is a symlink or a file.
func (x *extractor) parents(name, p string) error {
	dir, _ := splitPath(p)
	if e, ok := x.ix.entries[dir]; ok && e.Type == TypeDir {
		return nil // fast path: the direct parent exists, so all its parents do
	}
	parts := strings.Split(dir, "/")
	cur := ""
	for _, c := range parts {
		cur = join(cur, c)
		e, ok := x.ix.entries[cur]
		switch {
		case !ok:
			if err := os.Mkdir(x.full(cur), 0o755); err != nil {
				return fmt.Errorf("layer entry %q: %w", name, err)
			}
			if err := os.Chmod(x.full(cur), 0o755); err != nil {
				return fmt.Errorf("layer entry %q: %w", name, err)
			}
			x.ix.add(&IndexEntry{Path: cur, Type: TypeDir, Mode: 0o755})
		case e.Type == TypeSymlink:
			return fmt.Errorf("%w: %q would be written through the symlink %q", ErrUnsafe, name, cur)
		case e.Type != TypeDir:
			return fmt.Errorf("%w: %q would be written under the file %q", ErrUnsafe, name, cur)
		}
	}
	return nil
}

// clear removes what is at p (from an earlier layer or earlier in this one)
// so that a new entry can take its place.
func (x *extractor) clear(name, p string) error {
	e, ok := x.ix.entries[p]
	if !ok {
		return nil
	}
	var err error
	if e.Type == TypeDir {
		err = os.RemoveAll(x.full(p))
	} else {
		err = os.Remove(x.full(p))
	}
	if err != nil {
		return fmt.Errorf("layer entry %q: replacing what an earlier entry wrote: %w", name, err)
	}
	x.ix.drop(p)
	return nil
}

func fileMode(m int64) uint32 {
	return uint32(m) & 0o777 &^ 0o022
}

func (x *extractor) entry(hdr *tar.Header, tr *tar.Reader) error {
	name := hdr.Name
	p, err := cleanName(name)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeChar, tar.TypeBlock:
		return fmt.Errorf("%w: %q is a device file; runtimes may not carry devices (the sandbox provides /dev)", ErrUnsafe, name)
	case tar.TypeFifo:
		return fmt.Errorf("%w: %q is a fifo; runtimes may not carry fifos", ErrUnsafe, name)
	}
	if p == "" {
		if hdr.Typeflag == tar.TypeDir {
			return nil // the root: always 0755
		}
		return fmt.Errorf("%w: %q names the root but is not a directory", ErrUnsafe, name)
	}
	if err := x.parents(name, p); err != nil {
		return err
	}
	dir, base := splitPath(p)
	if base == opaqueMarker {
		return x.opaque(dir)
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		target := base[len(whiteoutPrefix):]
		if target == "" || target == "." || target == ".." {
			return fmt.Errorf("%w: whiteout %q names no file", ErrUnsafe, name)
		}
		t := join(dir, target)
		if x.ix.created[t] {
			return nil // whiteouts hide lower layers only
		}
		return x.clear(name, t)
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if e, ok := x.ix.entries[p]; ok && e.Type == TypeDir {
			x.ix.created[p] = true
			return nil
		}
		if err := x.clear(name, p); err != nil {
			return err
		}
		if err := os.Mkdir(x.full(p), 0o755); err != nil {
			return fmt.Errorf("layer entry %q: %w", name, err)
		}
		if err := os.Chmod(x.full(p), 0o755); err != nil {
			return fmt.Errorf("layer entry %q: %w", name, err)
		}
		x.ix.add(&IndexEntry{Path: p, Type: TypeDir, Mode: 0o755})
		return nil

	case tar.TypeSymlink:
		t := hdr.Linkname
		if t == "" || strings.IndexByte(t, 0) >= 0 || len(t) > 4000 {
			return fmt.Errorf("%w: symlink %q has an empty, NUL-containing or over-long target", ErrUnsafe, name)
		}
		if !strings.HasPrefix(t, "/") && climbs(dir, t) {
			return fmt.Errorf("%w: symlink %q -> %q climbs above the root", ErrUnsafe, name, t)
		}
		if err := x.clear(name, p); err != nil {
			return err
		}
		if err := os.Symlink(t, x.full(p)); err != nil {
			return fmt.Errorf("layer entry %q: %w", name, err)
		}
		x.ix.add(&IndexEntry{Path: p, Type: TypeSymlink, Mode: 0o777, Link: t})
		return nil

	case tar.TypeLink:
		if strings.HasPrefix(hdr.Linkname, "/") {
			return fmt.Errorf("%w: hard link %q -> %q points outside the tree (absolute target)", ErrUnsafe, name, hdr.Linkname)
		}
		tp, err := cleanName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("%w: hard link %q -> %q points outside the tree", ErrUnsafe, name, hdr.Linkname)
		}
		te, ok := x.ix.entries[tp]
		switch {
		case !ok:
			return fmt.Errorf("%w: hard link %q -> %q: the target is not extracted yet", ErrUnsafe, name, hdr.Linkname)
		case te.Type != TypeFile:
			return fmt.Errorf("%w: hard link %q -> %q: the target is not a regular file", ErrUnsafe, name, hdr.Linkname)
		case tp == p:
			return nil
		}
		cp := *te
		if err := x.clear(name, p); err != nil {
			return err
		}
		if err := os.Link(x.full(tp), x.full(p)); err != nil {
			return fmt.Errorf("layer entry %q: %w", name, err)
		}
		cp.Path = p
		x.ix.add(&cp)
		return nil

	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if hdr.Size < 0 || hdr.Size > x.lim.MaxFileBytes {
			return fmt.Errorf("%w: %q is %d bytes, over the %d-byte file limit", ErrLimit, name, hdr.Size, x.lim.MaxFileBytes)
		}
		if x.ix.nBytes+hdr.Size > x.lim.MaxImageBytes {
			return fmt.Errorf("%w: the image is over %d bytes uncompressed (at %q)", ErrLimit, x.lim.MaxImageBytes, name)
		}
		if err := x.clear(name, p); err != nil {
			return err
		}
		mode := fileMode(hdr.Mode)
		full := x.full(p)
		f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("layer entry %q: %w", name, err)
		}
		if x.buf == nil {
			x.buf = make([]byte, 256<<10)
		}
		h := sha256.New()
		n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(tr, hdr.Size), x.buf)
		if err == nil && n != hdr.Size {
			err = io.ErrUnexpectedEOF
		}
		if err == nil {
			err = f.Chmod(os.FileMode(mode))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("layer entry %q: writing %d bytes: %w", name, hdr.Size, err)
		}
		x.ix.nBytes += hdr.Size
		if !hdr.ModTime.IsZero() {
			if err := os.Chtimes(full, hdr.ModTime, hdr.ModTime); err != nil {
				return fmt.Errorf("layer entry %q: %w", name, err)
			}
		}
		x.ix.add(&IndexEntry{Path: p, Type: TypeFile, Mode: mode, Size: hdr.Size, SHA256: hex.EncodeToString(h.Sum(nil))})
		return nil
	}
	return fmt.Errorf("%w: %q has the unsupported tar type %q", ErrUnsafe, name, string(hdr.Typeflag))
}

// climbs reports whether the relative symlink target t, in directory dir,
// resolves (lexically) above the root.
func climbs(dir, t string) bool {
	depth := 0
	if dir != "" {
		depth = strings.Count(dir, "/") + 1
	}
	for _, c := range strings.Split(t, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

// opaque applies an opaque whiteout: everything under d that this layer did
// not write goes.
func (x *extractor) opaque(d string) error {
	if x.ix.opaqued[d] {
		return nil
	}
	x.ix.opaqued[d] = true
	e, ok := x.ix.entries[d]
	if !ok || e.Type != TypeDir {
		return nil
	}
	var walk func(p string) (kept bool, err error)
	walk = func(p string) (bool, error) {
		e := x.ix.entries[p]
		if e.Type == TypeDir {
			kept := false
			for c := range x.ix.children[p] {
				k, err := walk(join(p, c))
				if err != nil {
					return false, err
				}
				kept = kept || k
			}
			if kept || x.ix.created[p] {
				return true, nil
			}
		} else if x.ix.created[p] {
			return true, nil
		}
		if err := os.Remove(x.full(p)); err != nil {
			return false, fmt.Errorf("opaque whiteout of %q: %w", d, err)
		}
		x.ix.drop(p)
		return false, nil
	}
	for c := range x.ix.children[d] {
		if _, err := walk(join(d, c)); err != nil {
			return err
		}
	}
	return nil
}
