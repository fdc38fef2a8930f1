package image

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/mse-in-go/mse/internal/atomicfile"
)

// ErrModified is wrapped when an extracted tree no longer matches its image.
var ErrModified = errors.New("runtime tree modified")

// ModifiedError names what differs between an extracted tree and its image.
type ModifiedError struct {
	Digest  string // the image
	Tree    string // rootfs/<hex>
	Path    string // the first differing path, relative
	Problem string // what differs
	More    int    // how many other paths differ
}

func (e *ModifiedError) Error() string {
	more := ""
	if e.More > 0 {
		more = fmt.Sprintf(" (and %d more paths differ)", e.More)
	}
	p := e.Path
	if p == "" {
		p = "/"
	}
	return fmt.Sprintf("runtime %s file %s %s%s; the operator's copy was modified: remove %s (and %s.index) to re-extract",
		short(e.Digest), p, e.Problem, more, e.Tree, e.Tree)
}

func (e *ModifiedError) Unwrap() error { return ErrModified }

func short(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12] + "…"
	}
	return d
}

// indexFile is rootfs/<hex>.index.
type indexFile struct {
	Version int          `json:"version"`
	Image   string       `json:"image"`
	UID     int          `json:"uid"`
	GID     int          `json:"gid"`
	Size    int64        `json:"size"`
	Entries []IndexEntry `json:"entries"`
}

// statKey is what the fast pass compares.
type statKey struct {
	dev, ino     uint64
	mode         uint32
	nlink        uint64
	size         int64
	mtime, ctime int64
	uid, gid     uint32
}

func keyOf(st *syscall.Stat_t) statKey {
	return statKey{
		dev: uint64(st.Dev), ino: st.Ino, mode: st.Mode, nlink: uint64(st.Nlink), size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(), uid: st.Uid, gid: st.Gid,
	}
}

// rootState is the in-memory knowledge of one extracted tree.
type rootState struct {
	mu       sync.RWMutex
	ready    bool
	digest   string
	tree     string
	uid, gid uint32
	entries  []IndexEntry
	full     []string            // absolute path of each entry
	children map[string][]string // dir path → sorted child names
	snap     []statKey           // taken right after extraction or a full check
}

func (s *Store) state(digest string) *rootState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.roots[digest]
	if st == nil {
		st = &rootState{digest: digest}
		s.roots[digest] = st
	}
	return st
}

// Rootfs returns the directory of the image's extracted root filesystem,
// extracting it on first use, and checks on every call that the tree is
// still what was extracted (see docs/runtime-images.md). It is safe for
// concurrent use; checks of one tree run in parallel.
func (s *Store) Rootfs(ctx context.Context, digest string) (string, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return "", err
	}
	st := s.state(digest)
	st.mu.RLock()
	if st.ready {
		diffs := st.fastPass()
		tree := st.tree
		st.mu.RUnlock()
		if len(diffs) == 0 {
			return tree, nil
		}
	} else {
		st.mu.RUnlock()
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.ready {
		if err := s.prepare(ctx, st, h); err != nil {
			return "", err
		}
		return st.tree, nil
	}
	diffs := st.fastPass()
	if len(diffs) == 0 {
		return st.tree, nil
	}
	keys := make([]statKey, len(diffs))
	var first *ModifiedError
	for i, d := range diffs {
		k, err := st.check(d)
		if err != nil {
			if first == nil {
				first = err
			} else {
				first.More++
			}
			continue
		}
		keys[i] = k
	}
	if first != nil {
		return "", first
	}
	for i, d := range diffs {
		st.snap[d] = keys[i] // same content, new inode data (touch, chmod back, hard link elsewhere)
	}
	return st.tree, nil
}

// prepare loads (fully re-hashing) or extracts the tree and snapshots it.
// Caller holds st.mu for writing.
func (s *Store) prepare(ctx context.Context, st *rootState, h v1.Hash) error {
	tree := filepath.Join(s.dir, "rootfs", h.Hex)
	st.tree = tree
	if _, err := os.Lstat(tree); errors.Is(err, os.ErrNotExist) {
		if !s.Has(st.digest) {
			return fmt.Errorf("%w: %s; import or build it first", ErrNotFound, st.digest)
		}
		if err := s.extract(ctx, h, tree); err != nil {
			return err
		}
		if err := st.load(tree); err != nil {
			return err
		}
		// Snapshot right after extraction: what was just written is the image.
		return st.snapshot()
	} else if err != nil {
		return fmt.Errorf("runtime %s: %w", short(st.digest), err)
	}
	if err := st.load(tree); err != nil {
		return err
	}
	return st.fullCheck(ctx)
}

// load reads rootfs/<hex>.index.
func (st *rootState) load(tree string) error {
	f, err := os.Open(tree + ".index")
	if err != nil {
		return fmt.Errorf("runtime %s: the tree %s has no readable index (%v); remove %s to re-extract", short(st.digest), tree, err, tree)
	}
	defer f.Close()
	var ix indexFile
	if err := json.NewDecoder(bufio.NewReaderSize(io.LimitReader(f, 1<<30), 1<<20)).Decode(&ix); err != nil {
		return fmt.Errorf("runtime %s: index %s.index: %v; remove %s to re-extract", short(st.digest), tree, err, tree)
	}
	if ix.Version != 1 || ix.Image != st.digest || len(ix.Entries) == 0 || ix.Entries[0].Path != "" {
		return fmt.Errorf("runtime %s: index %s.index is not this image's; remove %s to re-extract", short(st.digest), tree, tree)
	}
	st.uid, st.gid = uint32(ix.UID), uint32(ix.GID)
	st.entries = ix.Entries
	st.full = make([]string, len(ix.Entries))
	st.children = map[string][]string{}
	for i, e := range ix.Entries {
		if e.Path == "" {
			st.full[i] = tree
		} else {
			st.full[i] = filepath.Join(tree, filepath.FromSlash(e.Path))
			d, b := splitPath(e.Path)
			st.children[d] = append(st.children[d], b)
		}
		if e.Type == TypeDir && st.children[e.Path] == nil {
			st.children[e.Path] = []string{}
		}
	}
	for _, c := range st.children {
		sort.Strings(c)
	}
	st.snap = nil
	st.ready = false
	return nil
}

func (st *rootState) snapshot() error {
	snap := make([]statKey, len(st.entries))
	for i, p := range st.full {
		var sb syscall.Stat_t
		if err := syscall.Lstat(p, &sb); err != nil {
			return fmt.Errorf("runtime %s: %s: %w", short(st.digest), p, err)
		}
		snap[i] = keyOf(&sb)
	}
	st.snap = snap
	st.ready = true
	return nil
}

// workers splits [0,n) over the CPUs and runs f on each part.
func workers(n int, f func(lo, hi int)) {
	w := min(runtime.GOMAXPROCS(0), 8, max(1, n/512))
	if w <= 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	for i := range w {
		lo, hi := n*i/w, n*(i+1)/w
		wg.Add(1)
		go func() { defer wg.Done(); f(lo, hi) }()
	}
	wg.Wait()
}

// fastPass lstat()s every entry and returns those whose stat differs from
// the snapshot. Caller holds st.mu (read or write).
func (st *rootState) fastPass() []int {
	var mu sync.Mutex
	var diffs []int
	workers(len(st.full), func(lo, hi int) {
		var local []int
		var sb syscall.Stat_t
		for i := lo; i < hi; i++ {
			if err := syscall.Lstat(st.full[i], &sb); err != nil || keyOf(&sb) != st.snap[i] {
				local = append(local, i)
			}
		}
		if len(local) > 0 {
			mu.Lock()
			diffs = append(diffs, local...)
			mu.Unlock()
		}
	})
	sort.Ints(diffs)
	return diffs
}

// fullCheck verifies every entry against the index (re-hashing every file)
// and takes the snapshot. Caller holds st.mu for writing.
func (st *rootState) fullCheck(ctx context.Context) error {
	snap := make([]statKey, len(st.entries))
	var mu sync.Mutex
	var first *ModifiedError
	workers(len(st.entries), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if ctx.Err() != nil {
				return
			}
			k, err := st.check(i)
			if err != nil {
				mu.Lock()
				if first == nil || st.entries[i].Path < first.Path {
					if first != nil {
						err.More = first.More + 1
					}
					first = err
				} else {
					first.More++
				}
				mu.Unlock()
				continue
			}
			snap[i] = k
		}
	})
	if err := ctx.Err(); err != nil {
		return err
	}
	if first != nil {
		return first
	}
	st.snap = snap
	st.ready = true
	return nil
}

// check compares entry i with the index, hashing a regular file, and
// returns its stat key when it matches.
func (st *rootState) check(i int) (statKey, *ModifiedError) {
	e := st.entries[i]
	p := st.full[i]
	bad := func(format string, a ...any) *ModifiedError {
		return &ModifiedError{Digest: st.digest, Tree: st.tree, Path: e.Path, Problem: fmt.Sprintf(format, a...)}
	}
	var sb syscall.Stat_t
	if err := syscall.Lstat(p, &sb); err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
			return statKey{}, bad("is missing (removed from the tree)")
		}
		return statKey{}, bad("cannot be read: %v", err)
	}
	ft := sb.Mode & syscall.S_IFMT
	want := map[string]uint32{TypeDir: syscall.S_IFDIR, TypeFile: syscall.S_IFREG, TypeSymlink: syscall.S_IFLNK}[e.Type]
	if ft != want {
		return statKey{}, bad("is a %s, want a %s", typeName(ft), typeName(want))
	}
	if sb.Uid != st.uid || sb.Gid != st.gid {
		return statKey{}, bad("is owned by %d:%d, want %d:%d", sb.Uid, sb.Gid, st.uid, st.gid)
	}
	if e.Type != TypeSymlink && sb.Mode&0o7777 != e.Mode {
		return statKey{}, bad("has mode %04o, want %04o", sb.Mode&0o7777, e.Mode)
	}
	switch e.Type {
	case TypeSymlink:
		t, err := os.Readlink(p)
		if err != nil || t != e.Link {
			return statKey{}, bad("is a symlink to %q, want %q", t, e.Link)
		}
	case TypeDir:
		f, err := os.Open(p)
		if err != nil {
			return statKey{}, bad("cannot be read: %v", err)
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return statKey{}, bad("cannot be read: %v", err)
		}
		want := st.children[e.Path]
		sort.Strings(names)
		for _, n := range names {
			if _, found := slices.BinarySearch(want, n); !found {
				return statKey{}, &ModifiedError{Digest: st.digest, Tree: st.tree, Path: join(e.Path, n), Problem: "is not in the image (added to the tree)"}
			}
		}
	case TypeFile:
		if sb.Size != e.Size {
			return statKey{}, bad("differs from the image (%d bytes, want %d)", sb.Size, e.Size)
		}
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return statKey{}, bad("cannot be read: %v", err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		var after syscall.Stat_t
		if err == nil {
			err = syscall.Fstat(int(f.Fd()), &after)
		}
		f.Close()
		if err != nil {
			return statKey{}, bad("cannot be read: %v", err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != e.SHA256 {
			return statKey{}, bad("differs from the image (sha256 %s, want %s)", got, e.SHA256)
		}
		if keyOf(&after) != keyOf(&sb) {
			return statKey{}, bad("changed while being checked")
		}
	}
	return keyOf(&sb), nil
}

func typeName(ft uint32) string {
	switch ft {
	case syscall.S_IFDIR:
		return "directory"
	case syscall.S_IFREG:
		return "regular file"
	case syscall.S_IFLNK:
		return "symlink"
	case syscall.S_IFIFO:
		return "fifo"
	case syscall.S_IFSOCK:
		return "socket"
	case syscall.S_IFCHR, syscall.S_IFBLK:
		return "device"
	}
	return "special file"
}

// extract unpacks every layer of the image into a work directory, checking
// each layer's digest and diff_id while reading it, writes the index, and
// renames the tree into place.
func (s *Store) extract(ctx context.Context, h v1.Hash, tree string) error {
	digest := h.String()
	m, err := s.readManifest(h)
	if err != nil {
		return fmt.Errorf("runtime %s: %w", short(digest), err)
	}
	cfg, err := s.readConfig(m)
	if err != nil {
		return fmt.Errorf("runtime %s: %w", short(digest), err)
	}
	if err := s.checkImage(m, cfg); err != nil {
		return fmt.Errorf("runtime %s: %w", short(digest), err)
	}
	tmp, release, err := s.newTemp("rootfs-")
	if err != nil {
		return err
	}
	defer release()
	work := filepath.Join(tmp, "tree")
	if err := os.Mkdir(work, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	idx := NewIndex()
	bound := &boundReader{left: s.lim.streamLimit(), max: s.lim.streamLimit()}
	for i, ld := range m.Layers {
		if err := s.extractBlob(ctx, ld, cfg.RootFS.DiffIDs[i], work, idx, bound); err != nil {
			return fmt.Errorf("runtime %s: layer %d (%s): %w", short(digest), i, ld.Digest, err)
		}
	}
	if err := ensureMountpoints(work, idx); err != nil {
		return fmt.Errorf("runtime %s: %w", short(digest), err)
	}
	ix := indexFile{Version: 1, Image: digest, UID: os.Geteuid(), GID: os.Getegid(), Size: idx.Size(), Entries: idx.Entries()}
	b, err := json.Marshal(ix)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(tree+".index", append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("runtime %s: writing the index: %w", short(digest), err)
	}
	if err := os.Rename(work, tree); err != nil {
		if _, serr := os.Lstat(tree); serr == nil {
			return nil // another process extracted it meanwhile; same index
		}
		return fmt.Errorf("runtime %s: moving the tree into place: %w", short(digest), err)
	}
	return nil
}

func (s *Store) extractBlob(ctx context.Context, ld v1.Descriptor, diffID v1.Hash, work string, idx *Index, bound *boundReader) error {
	f, err := os.Open(s.blobPath(ld.Digest))
	if err != nil {
		return fmt.Errorf("%w; remove the image and import it again", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != ld.Size {
		return fmt.Errorf("the blob is not %d bytes as the manifest says; remove the image and import it again", ld.Size)
	}
	ch := &hashReader{r: ctxReader{ctx, f}, h: sha256.New()}
	var ur io.Reader = bufio.NewReaderSize(ch, 1<<20)
	if gzipped(ld.MediaType) {
		gz, err := gzip.NewReader(ur)
		if err != nil {
			return fmt.Errorf("the layer is not gzip data: %w", err)
		}
		defer gz.Close()
		ur = gz
	}
	bound.r = ur
	uh := &hashReader{r: bound, h: sha256.New()}
	if err := ExtractLayer(uh, work, s.lim, idx); err != nil {
		return err
	}
	// Read the rest, so that both digests cover the whole blob.
	if _, err := io.Copy(io.Discard, uh); err != nil {
		return fmt.Errorf("reading past the tar end: %w", err)
	}
	if _, err := io.Copy(io.Discard, ch); err != nil {
		return err
	}
	if got := hex.EncodeToString(ch.h.Sum(nil)); got != ld.Digest.Hex {
		return fmt.Errorf("the blob hashes to sha256:%s, not its digest: it is corrupt or was replaced; remove the image and import it again", got)
	}
	if got := hex.EncodeToString(uh.h.Sum(nil)); got != diffID.Hex {
		return fmt.Errorf("the uncompressed layer hashes to sha256:%s, but the config's diff_id is %s; the image is malformed", got, diffID)
	}
	return nil
}

// Mountpoints are the directories a sandbox mounts over (/dev, /proc, /sys,
// /run, /tmp): created, empty, in every extracted tree that lacks them, and
// recorded in the index, so that the OCI runtime never has to create them in
// the shared tree (which the next check would then refuse as modified).
var Mountpoints = []string{"dev", "proc", "sys", "run", "tmp"}

func ensureMountpoints(work string, idx *Index) error {
	for _, p := range Mountpoints {
		if e, ok := idx.Lookup(p); ok {
			if e.Type != TypeDir {
				return fmt.Errorf("/%s is a %s in the image, not a directory: a sandbox mounts over it", p, typeName(fileTypeOf(e.Type)))
			}
			continue
		}
		if err := os.Mkdir(filepath.Join(work, p), 0o755); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(work, p), 0o755); err != nil {
			return err
		}
		idx.add(&IndexEntry{Path: p, Type: TypeDir, Mode: 0o755})
	}
	return nil
}

func fileTypeOf(t string) uint32 {
	switch t {
	case TypeDir:
		return syscall.S_IFDIR
	case TypeSymlink:
		return syscall.S_IFLNK
	}
	return syscall.S_IFREG
}
