// Package image keeps the runtime images of the operator's catalog: an OCI
// image layout holding every image, and the extracted, verified root
// filesystems that sandboxes mount read-only. It builds images from Debian
// packages (mmdebstrap), imports them from OCI layouts and tarballs, and
// before every spawn checks that the extracted tree is still what the image
// holds. The on-disk layout and the verification model are documented in
// docs/runtime-images.md.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/mse-in-go/mse/internal/atomicfile"
	"github.com/mse-in-go/mse/internal/runtimes"
)

// Limits bound what an image may hold. Zero fields take the defaults.
type Limits struct {
	MaxImageBytes int64 // uncompressed total of all layers' files, default 2 GiB
	MaxFiles      int   // tar entries over all layers, default 200_000
	MaxFileBytes  int64 // one file, default 1 GiB
}

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{MaxImageBytes: 2 << 30, MaxFiles: 200_000, MaxFileBytes: 1 << 30}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxImageBytes <= 0 {
		l.MaxImageBytes = d.MaxImageBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	return l
}

// streamLimit bounds the uncompressed tar bytes read over all layers: the
// file bytes plus headers and padding.
func (l Limits) streamLimit() int64 {
	return l.MaxImageBytes + int64(l.MaxFiles)*3072 + 1<<20
}

// Metadata bounds.
const (
	maxManifestBytes = 4 << 20
	maxConfigBytes   = 4 << 20
	maxIndexBytes    = 4 << 20
	maxLayers        = 256
)

// ErrNotFound is wrapped when the store does not hold an image.
var ErrNotFound = errors.New("runtime image not in the store")

// Store is a directory holding runtime images:
//
//	layout/              OCI image layout: oci-layout, index.json, blobs/sha256/…
//	rootfs/<hex>/        extracted root filesystem of the image sha256:<hex>
//	rootfs/<hex>.index   its index: every path, type, mode, and file SHA-256
//	recipes/<hex>.json   Build cache: recipe hash → result
//	tmp/                 work in progress (removed at Open when abandoned)
//	lock                 serialises changes between processes
//
// A Store is safe for concurrent use, and several processes may share one
// directory.
type Store struct {
	dir string
	lim Limits

	mu    sync.Mutex
	roots map[string]*rootState // digest → extracted tree state
}

// Open opens (creating when missing) the store in dir.
func Open(dir string, lim Limits) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("runtime store %s: %w", dir, err)
	}
	s := &Store{dir: abs, lim: lim.withDefaults(), roots: map[string]*rootState{}}
	for _, d := range []string{"", "layout", "layout/blobs/sha256", "rootfs", "recipes", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			return nil, fmt.Errorf("runtime store %s: %w", abs, err)
		}
	}
	if err := os.Chmod(filepath.Join(abs, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("runtime store %s: %w", abs, err)
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	ol := filepath.Join(abs, "layout", "oci-layout")
	if _, err := os.Stat(ol); errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.Write(ol, []byte(`{"imageLayoutVersion":"1.0.0"}`+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("runtime store %s: %w", abs, err)
		}
	}
	if _, err := os.Stat(s.indexPath()); errors.Is(err, os.ErrNotExist) {
		if err := s.writeIndex(&v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}); err != nil {
			return nil, err
		}
	}
	if _, err := s.readIndex(); err != nil {
		return nil, err
	}
	s.cleanTemps()
	return s, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// LayoutDir returns the OCI image layout directory of the store (for
// pushing its images elsewhere, e.g. with crane).
func (s *Store) LayoutDir() string { return filepath.Join(s.dir, "layout") }

func (s *Store) indexPath() string { return filepath.Join(s.dir, "layout", "index.json") }

func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.dir, "layout", "blobs", h.Algorithm, h.Hex)
}

// lock takes the store's inter-process lock (and the in-process one).
func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("runtime store lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("runtime store lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// newTemp makes a work directory under tmp/ held by a lock file, so that
// Open in another process leaves it alone while this one works.
func (s *Store) newTemp(prefix string) (string, func(), error) {
	d, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), prefix)
	if err != nil {
		return "", nil, fmt.Errorf("runtime store: %w", err)
	}
	lf, err := os.OpenFile(d+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		err = syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		os.RemoveAll(d)
		return "", nil, fmt.Errorf("runtime store: locking %s: %w", d, err)
	}
	return d, func() {
		os.RemoveAll(d)
		os.Remove(d + ".lock")
		lf.Close()
	}, nil
}

// cleanTemps removes work directories whose owner died.
func (s *Store) cleanTemps() {
	tmp := filepath.Join(s.dir, "tmp")
	ents, _ := os.ReadDir(tmp)
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".lock") {
			if _, err := os.Stat(filepath.Join(tmp, n+".lock")); errors.Is(err, os.ErrNotExist) {
				os.RemoveAll(filepath.Join(tmp, n)) // lock never created: abandoned
			}
			continue
		}
		lf, err := os.OpenFile(filepath.Join(tmp, n), os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.RemoveAll(filepath.Join(tmp, strings.TrimSuffix(n, ".lock")))
			os.Remove(filepath.Join(tmp, n))
		}
		lf.Close()
	}
}

func (s *Store) readIndex() (*v1.IndexManifest, error) {
	b, err := readFileMax(s.indexPath(), maxIndexBytes)
	if err != nil {
		return nil, fmt.Errorf("runtime store %s: %w", s.dir, err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("runtime store %s: layout/index.json: %w; restore it from a backup or remove the store", s.dir, err)
	}
	return im, nil
}

func (s *Store) writeIndex(im *v1.IndexManifest) error {
	if im.Manifests == nil {
		im.Manifests = []v1.Descriptor{}
	}
	b, err := json.MarshalIndent(im, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.indexPath(), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("runtime store %s: writing layout/index.json: %w", s.dir, err)
	}
	return nil
}

func readFileMax(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, max)
	}
	return b, nil
}

func parseDigest(d string) (v1.Hash, error) {
	if !runtimes.ValidDigest(d) {
		return v1.Hash{}, fmt.Errorf("runtime digest %q is not sha256: and 64 lowercase hex digits", d)
	}
	return v1.NewHash(d)
}

// Has reports whether the store holds the image with manifest digest d.
func (s *Store) Has(d string) bool {
	h, err := parseDigest(d)
	if err != nil {
		return false
	}
	im, err := s.readIndex()
	if err != nil {
		return false
	}
	for _, m := range im.Manifests {
		if m.Digest == h {
			_, err := os.Stat(s.blobPath(h))
			return err == nil
		}
	}
	return false
}

// Digests lists the images of the store.
func (s *Store) Digests() ([]string, error) {
	im, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range im.Manifests {
		out = append(out, m.Digest.String())
	}
	return out, nil
}

// Remove drops an image: its index entry, its extracted tree and index, and
// the blobs no other image uses. A node still running in it keeps its open
// files; the caller must not spawn new ones.
func (s *Store) Remove(d string) error {
	h, err := parseDigest(d)
	if err != nil {
		return err
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	im, err := s.readIndex()
	if err != nil {
		return err
	}
	n := len(im.Manifests)
	im.Manifests = slices.DeleteFunc(im.Manifests, func(m v1.Descriptor) bool { return m.Digest == h })
	if len(im.Manifests) == n {
		return fmt.Errorf("%w: %s (see Digests for what it holds)", ErrNotFound, d)
	}
	if err := s.writeIndex(im); err != nil {
		return err
	}

	s.mu.Lock()
	st := s.roots[d]
	delete(s.roots, d)
	s.mu.Unlock()
	if st != nil {
		st.mu.Lock()
		st.ready = false
		st.mu.Unlock()
	}
	tree := filepath.Join(s.dir, "rootfs", h.Hex)
	if _, err := os.Lstat(tree); err == nil {
		tmp, release, err := s.newTemp("removed-")
		if err != nil {
			return err
		}
		defer release()
		if err := os.Rename(tree, filepath.Join(tmp, "tree")); err != nil {
			return fmt.Errorf("removing %s: %w", tree, err)
		}
	}
	if err := os.Remove(tree + ".index"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s.index: %w", tree, err)
	}
	return s.gcBlobs(im)
}

// gcBlobs removes blobs no image of im references. Caller holds the lock.
func (s *Store) gcBlobs(im *v1.IndexManifest) error {
	keep := map[string]bool{}
	for _, d := range im.Manifests {
		keep[d.Digest.Hex] = true
		m, err := s.readManifest(d.Digest)
		if err != nil {
			return fmt.Errorf("runtime store: keeping the blobs of %s: %w", d.Digest, err)
		}
		keep[m.Config.Digest.Hex] = true
		for _, l := range m.Layers {
			keep[l.Digest.Hex] = true
		}
	}
	dir := filepath.Join(s.dir, "layout", "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("runtime store: %w", err)
	}
	for _, e := range ents {
		if len(e.Name()) == 64 && !keep[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("runtime store: removing an unused blob: %w", err)
			}
		}
	}
	return nil
}

// readManifest reads and verifies a manifest blob of the store.
func (s *Store) readManifest(h v1.Hash) (*v1.Manifest, error) {
	b, err := readFileMax(s.blobPath(h), maxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", h, err)
	}
	if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != h.Hex {
		return nil, fmt.Errorf("manifest blob %s is corrupt (its content hashes to sha256:%x); remove the image and import it again", h, got)
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", h, err)
	}
	return m, nil
}

// readConfig reads and verifies the config blob of a manifest.
func (s *Store) readConfig(m *v1.Manifest) (*v1.ConfigFile, error) {
	b, err := readFileMax(s.blobPath(m.Config.Digest), maxConfigBytes)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != m.Config.Digest.Hex {
		return nil, fmt.Errorf("config blob %s is corrupt (its content hashes to sha256:%x); remove the image and import it again", m.Config.Digest, got)
	}
	return v1.ParseConfigFile(bytes.NewReader(b))
}

// Layer media types a runtime may use.
var layerTypes = map[types.MediaType]bool{
	types.OCILayer:                true,
	types.DockerLayer:             true,
	types.OCIUncompressedLayer:    true,
	types.DockerUncompressedLayer: true,
}

func gzipped(mt types.MediaType) bool { return mt == types.OCILayer || mt == types.DockerLayer }

// checkImage refuses what a runtime may not be: not one linux/amd64 image,
// unknown or foreign layers, sizes over the limits.
func (s *Store) checkImage(m *v1.Manifest, cfg *v1.ConfigFile) error {
	switch m.MediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2, "":
	default:
		return fmt.Errorf("the manifest has media type %q; a runtime must be one image (OCI or Docker v2 manifest), not an index", m.MediaType)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		return fmt.Errorf("the image is for %s/%s; runtimes must be linux/amd64 single-platform images", cfg.OS, cfg.Architecture)
	}
	if len(m.Layers) == 0 || len(m.Layers) > maxLayers {
		return fmt.Errorf("%w: the image has %d layers; a runtime has 1 to %d", ErrLimit, len(m.Layers), maxLayers)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return fmt.Errorf("the image config lists %d layer diff_ids for %d layers; the image is malformed", len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	var total int64
	for i, l := range m.Layers {
		if !layerTypes[l.MediaType] {
			return fmt.Errorf("layer %d has media type %q; runtimes take tar or tar+gzip layers (convert zstd or foreign layers first)", i, l.MediaType)
		}
		if len(l.URLs) > 0 {
			return fmt.Errorf("layer %d is a foreign layer (urls %v); runtimes must hold all their layers", i, l.URLs)
		}
		if l.Size < 0 || l.Digest.Algorithm != "sha256" || len(l.Digest.Hex) != 64 {
			return fmt.Errorf("layer %d has a bad descriptor (size %d, digest %s)", i, l.Size, l.Digest)
		}
		total += l.Size
	}
	if total > s.lim.MaxImageBytes+s.lim.MaxImageBytes/10 {
		return fmt.Errorf("%w: the layers are %d bytes compressed, over the %d-byte image limit", ErrLimit, total, s.lim.MaxImageBytes)
	}
	return nil
}

// Import adds an image from an OCI image layout directory (holding one
// image), an OCI layout tarball, or a `docker save` tarball (with one
// image), and returns its manifest digest. The image must be a
// single-platform linux/amd64 image.
func (s *Store) Import(ctx context.Context, path string) (string, error) {
	return s.ImportRef(ctx, path, "")
}

// ImportRef is Import of the image named ref: the
// org.opencontainers.image.ref.name annotation (or io.containerd.image.name)
// in an OCI layout, the repository:tag in a docker-save tarball.
func (s *Store) ImportRef(ctx context.Context, path, ref string) (string, error) {
	img, release, err := s.openSource(path, ref)
	if err != nil {
		return "", fmt.Errorf("importing %s: %w", path, err)
	}
	defer release()
	d, err := s.add(ctx, img)
	if err != nil {
		return "", fmt.Errorf("importing %s: %w", path, err)
	}
	return d, nil
}

func (s *Store) openSource(path, ref string) (v1.Image, func(), error) {
	nop := func() {}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if fi.IsDir() {
		img, err := fromLayout(path, ref)
		return img, nop, err
	}
	kind, err := s.sniffTar(path)
	if err != nil {
		return nil, nil, err
	}
	if kind == "oci" {
		tmp, release, err := s.newTemp("import-")
		if err != nil {
			return nil, nil, err
		}
		if err := s.unpackLayoutTar(path, tmp); err != nil {
			release()
			return nil, nil, err
		}
		img, err := fromLayout(tmp, ref)
		if err != nil {
			release()
			return nil, nil, err
		}
		return img, release, nil
	}
	var tag *name.Tag
	if ref != "" {
		t, err := name.NewTag(ref)
		if err != nil {
			return nil, nil, fmt.Errorf("reference %q: %w", ref, err)
		}
		tag = &t
	}
	img, err := tarball.ImageFromPath(path, tag)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the docker-save tarball: %w", err)
	}
	return img, nop, nil
}

// sniffTar tells an OCI layout tarball ("oci") from a docker-save one
// ("docker"), checking the sizes of the metadata files on the way.
func (s *Store) sniffTar(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var magic [2]byte
	if _, err := io.ReadFull(f, magic[:]); err == nil && magic == [2]byte{0x1f, 0x8b} {
		return "", errors.New("the file is gzip-compressed; decompress it first (gunzip), then import the .tar")
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	tr := tar.NewReader(f)
	var oci, docker bool
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("not a tar file: %w", err)
		}
		if n > maxLayers*4+16 {
			return "", fmt.Errorf("%w: the image tarball has more than %d entries", ErrLimit, maxLayers*4+16)
		}
		switch strings.TrimPrefix(hdr.Name, "./") {
		case "oci-layout":
			oci = true
		case "manifest.json":
			docker = true
			if hdr.Size > maxIndexBytes {
				return "", fmt.Errorf("%w: manifest.json is %d bytes", ErrLimit, hdr.Size)
			}
		}
	}
	switch {
	case oci:
		return "oci", nil
	case docker:
		return "docker", nil
	}
	return "", errors.New("the tarball holds neither oci-layout nor manifest.json: it is not an OCI layout or docker-save tarball")
}

// unpackLayoutTar extracts an OCI layout tarball: only oci-layout,
// index.json, blobs/sha256/<hex> (and docker's manifest.json, repositories).
func (s *Store) unpackLayoutTar(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var total int64
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the OCI layout tarball: %w", err)
		}
		n := strings.TrimPrefix(hdr.Name, "./")
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		var dst string
		switch {
		case n == "oci-layout" || n == "index.json":
			if hdr.Size > maxIndexBytes {
				return fmt.Errorf("%w: %s is %d bytes", ErrLimit, n, hdr.Size)
			}
			dst = filepath.Join(dir, n)
		case strings.HasPrefix(n, "blobs/sha256/") && len(n) == len("blobs/sha256/")+64:
			if _, err := hex.DecodeString(n[len("blobs/sha256/"):]); err != nil {
				return fmt.Errorf("OCI layout tarball entry %q is not a sha256 blob", hdr.Name)
			}
			dst = filepath.Join(dir, filepath.FromSlash(n))
		case n == "manifest.json" || n == "repositories":
			continue
		default:
			return fmt.Errorf("%w: OCI layout tarball entry %q is not part of an image layout", ErrUnsafe, hdr.Name)
		}
		if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA {
			return fmt.Errorf("%w: OCI layout tarball entry %q is not a regular file", ErrUnsafe, hdr.Name)
		}
		total += hdr.Size
		if total > s.lim.MaxImageBytes+s.lim.MaxImageBytes/10+maxIndexBytes {
			return fmt.Errorf("%w: the OCI layout tarball is over %d bytes", ErrLimit, s.lim.MaxImageBytes)
		}
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("OCI layout tarball entry %q: %w", hdr.Name, err)
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("OCI layout tarball entry %q: %w", hdr.Name, err)
		}
	}
}

// fromLayout picks the image of an OCI layout: the only one, or the one
// named ref; an index is followed to its single linux/amd64 image.
func fromLayout(dir, ref string) (v1.Image, error) {
	if fi, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		return nil, fmt.Errorf("not an OCI image layout (no index.json): %w", err)
	} else if fi.Size() > maxIndexBytes {
		return nil, fmt.Errorf("%w: index.json is %d bytes", ErrLimit, fi.Size())
	}
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the OCI layout: %w", err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the OCI layout's index.json: %w", err)
	}
	var picked []v1.Descriptor
	var refs []string
	for _, d := range im.Manifests {
		r := d.Annotations["org.opencontainers.image.ref.name"]
		if r == "" {
			r = d.Annotations["io.containerd.image.name"]
		}
		if r != "" {
			refs = append(refs, r)
		}
		if ref == "" || r == ref || d.Annotations["io.containerd.image.name"] == ref {
			picked = append(picked, d)
		}
	}
	switch {
	case len(picked) == 0 && ref != "":
		return nil, fmt.Errorf("the OCI layout has no image named %q (it names: %s)", ref, strings.Join(refs, ", "))
	case len(picked) == 0:
		return nil, errors.New("the OCI layout holds no image")
	case len(picked) > 1:
		return nil, fmt.Errorf("the OCI layout holds %d images; name one (its names: %s)", len(picked), strings.Join(refs, ", "))
	}
	d := picked[0]
	switch d.MediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		return ii.Image(d.Digest)
	case types.OCIImageIndex, types.DockerManifestList:
		child, err := ii.ImageIndex(d.Digest)
		if err != nil {
			return nil, err
		}
		cm, err := child.IndexManifest()
		if err != nil {
			return nil, err
		}
		var imgs []v1.Descriptor
		var plats []string
		for _, c := range cm.Manifests {
			if c.Platform == nil || c.Platform.OS == "unknown" {
				continue // attestations and the like
			}
			plats = append(plats, c.Platform.OS+"/"+c.Platform.Architecture)
			if c.Platform.OS == "linux" && c.Platform.Architecture == "amd64" &&
				(c.MediaType == types.OCIManifestSchema1 || c.MediaType == types.DockerManifestSchema2) {
				imgs = append(imgs, c)
			}
		}
		if len(imgs) != 1 {
			return nil, fmt.Errorf("the OCI layout holds an index of %d platform images (%s), not one linux/amd64 image; runtimes must be single-platform linux/amd64", len(plats), strings.Join(plats, ", "))
		}
		return child.Image(imgs[0].Digest)
	}
	return nil, fmt.Errorf("the OCI layout's entry has media type %q, not an image", d.MediaType)
}

// add writes an image's blobs (verifying each against its descriptor) and
// adds it to the index. It holds the store lock so that Remove's blob
// collection never sees half an image.
func (s *Store) add(ctx context.Context, img v1.Image) (string, error) {
	rawM, err := img.RawManifest()
	if err != nil {
		return "", fmt.Errorf("reading the manifest: %w", err)
	}
	if len(rawM) > maxManifestBytes {
		return "", fmt.Errorf("%w: the manifest is %d bytes", ErrLimit, len(rawM))
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawM))
	if err != nil {
		return "", fmt.Errorf("parsing the manifest: %w", err)
	}
	rawC, err := img.RawConfigFile()
	if err != nil {
		return "", fmt.Errorf("reading the config: %w", err)
	}
	if len(rawC) > maxConfigBytes {
		return "", fmt.Errorf("%w: the config is %d bytes", ErrLimit, len(rawC))
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawC))
	if err != nil {
		return "", fmt.Errorf("parsing the config: %w", err)
	}
	if m.MediaType == "" {
		mt, _ := img.MediaType()
		m.MediaType = mt
	}
	if err := s.checkImage(m, cfg); err != nil {
		return "", err
	}
	mh := sha256.Sum256(rawM)
	digest := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(mh[:])}

	unlock, err := s.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	for i, ld := range m.Layers {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return "", fmt.Errorf("layer %d (%s): %w", i, ld.Digest, err)
		}
		if err := s.writeBlob(ctx, ld, func() (io.ReadCloser, error) { return l.Compressed() }); err != nil {
			return "", fmt.Errorf("layer %d: %w", i, err)
		}
	}
	if err := s.writeBlob(ctx, m.Config, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(rawC)), nil }); err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	md := v1.Descriptor{MediaType: m.MediaType, Size: int64(len(rawM)), Digest: digest}
	if err := s.writeBlob(ctx, md, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(rawM)), nil }); err != nil {
		return "", fmt.Errorf("manifest: %w", err)
	}
	im, err := s.readIndex()
	if err != nil {
		return "", err
	}
	for _, d := range im.Manifests {
		if d.Digest == digest {
			return digest.String(), nil
		}
	}
	md.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
	im.Manifests = append(im.Manifests, md)
	if err := s.writeIndex(im); err != nil {
		return "", err
	}
	return digest.String(), nil
}

// writeBlob stores a blob, refusing content whose size or digest is not the
// descriptor's. A blob already present is kept (Rootfs verifies it).
func (s *Store) writeBlob(ctx context.Context, d v1.Descriptor, open func() (io.ReadCloser, error)) error {
	if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 {
		return fmt.Errorf("descriptor digest %q is not sha256", d.Digest)
	}
	dst := s.blobPath(d.Digest)
	if fi, err := os.Stat(dst); err == nil && fi.Size() == d.Size {
		return nil
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, io.LimitReader(rc, d.Size+1)})
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing blob %s: %w", d.Digest, err)
	}
	if n != d.Size {
		return fmt.Errorf("blob %s is %d bytes or more, but its descriptor says %d; the source is corrupt", d.Digest, n, d.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Digest.Hex {
		return fmt.Errorf("blob %s hashes to sha256:%s; the source is corrupt", d.Digest, got)
	}
	return os.Rename(tmp.Name(), dst)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// hashReader hashes what is read through it.
type hashReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// boundReader fails (rather than ending) past max bytes.
type boundReader struct {
	r    io.Reader
	left int64
	max  int64
}

func (b *boundReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("%w: the layers are over %d bytes uncompressed", ErrLimit, b.max)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}
