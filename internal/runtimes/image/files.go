package image

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is a file of an image made by AddFiles.
type File struct {
	Path   string      // absolute in the image, e.g. "/mse-node"
	Mode   os.FileMode // permission bits, e.g. 0o555
	Source string      // the file on this machine whose content it gets
}

// FilesSpec is the recipe of an image of a few files (no distribution):
// the node image, /mse-node and /mse-fetch.
type FilesSpec struct {
	Files           []File
	Labels          map[string]string
	User            string // the config's user ("65532")
	Entrypoint      []string
	Env             []string // "NAME=value"
	SourceDateEpoch int64    // 0 → DefaultSourceDateEpoch
}

// AddFiles builds a one-layer linux/amd64 image holding exactly spec's
// files (and their parent directories), reproducibly: entries sorted, owned
// by 0:0, timestamps SourceDateEpoch, the layer gzipped at GzipLevel; the
// same files give the same digest. It adds it to the store and returns its
// manifest digest.
func (s *Store) AddFiles(ctx context.Context, spec FilesSpec) (string, error) {
	if len(spec.Files) == 0 {
		return "", fmt.Errorf("image of files: %w", ErrUnsafe)
	}
	epoch := spec.SourceDateEpoch
	if epoch == 0 {
		epoch = DefaultSourceDateEpoch
	}
	mtime := time.Unix(epoch, 0).UTC()
	files := slices.Clone(spec.Files)
	dirs := map[string]bool{}
	for i, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || p == "/" || p != f.Path || f.Mode&^os.ModePerm != 0 {
			return "", fmt.Errorf("image of files: %q (mode %v): %w: a clean absolute path and permission bits only", f.Path, f.Mode, ErrUnsafe)
		}
		files[i].Path = strings.TrimPrefix(p, "/")
		for d := path.Dir(files[i].Path); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	for i := range files {
		if (i > 0 && files[i].Path == files[i-1].Path) || dirs[files[i].Path] {
			return "", fmt.Errorf("image of files: /%s is listed twice or is also a directory", files[i].Path)
		}
	}
	tmp, release, err := s.newTemp("files-")
	if err != nil {
		return "", err
	}
	defer release()
	gzPath := filepath.Join(tmp, "layer.tar.gz")
	if err := writeFilesLayer(ctx, gzPath, files, slices.Sorted(maps.Keys(dirs)), mtime, s.lim); err != nil {
		return "", err
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = "/" + f.Path
	}
	d, err := s.addLayerImage(ctx, gzPath, mtime, v1.Config{User: spec.User, Labels: spec.Labels, Entrypoint: spec.Entrypoint, Env: spec.Env},
		"mse files "+strings.Join(names, " "))
	if err != nil {
		return "", fmt.Errorf("image of files: %w", err)
	}
	return d, nil
}

// addLayerImage adds to the store the linux/amd64 OCI image of the one
// gzipped layer at gzPath with config cfg, created at created (the layer's
// history says createdBy), and returns its manifest digest: the same
// inputs give the same digest.
func (s *Store) addLayerImage(ctx context.Context, gzPath string, created time.Time, cfg v1.Config, createdBy string) (string, error) {
	layer, err := tarball.LayerFromFile(gzPath, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return "", fmt.Errorf("making the layer: %w", err)
	}
	at := v1.Time{Time: created}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{Architecture: "amd64", OS: "linux", Created: at, RootFS: v1.RootFS{Type: "layers"}, Config: cfg})
	if err != nil {
		return "", err
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer, History: v1.History{Created: at, CreatedBy: createdBy}})
	if err != nil {
		return "", err
	}
	d, err := s.add(ctx, img)
	if err != nil {
		return "", fmt.Errorf("adding the image: %w", err)
	}
	return d, nil
}

func writeFilesLayer(ctx context.Context, dst string, files []File, dirs []string, mtime time.Time, lim Limits) error {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	bw := bufio.NewWriterSize(out, 1<<20)
	gz, err := gzip.NewWriterLevel(bw, GzipLevel)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	hdr := func(name string, typ byte, mode int64, size int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: typ, Mode: mode, Size: size, ModTime: mtime, Format: tar.FormatPAX}
	}
	for _, d := range dirs {
		if err := tw.WriteHeader(hdr(d+"/", tar.TypeDir, 0o755, 0)); err != nil {
			return err
		}
	}
	var total int64
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		in, err := os.Open(f.Source)
		if err != nil {
			return fmt.Errorf("image of files: /%s: %w", f.Path, err)
		}
		st, err := in.Stat()
		if err == nil && !st.Mode().IsRegular() {
			err = fmt.Errorf("%s is not a regular file", f.Source)
		}
		if err == nil && st.Size() > lim.MaxFileBytes {
			err = fmt.Errorf("%w: %s is %d bytes", ErrLimit, f.Source, st.Size())
		}
		if err == nil {
			total += st.Size()
			if total > lim.MaxImageBytes {
				err = fmt.Errorf("%w: the files are over %d bytes", ErrLimit, lim.MaxImageBytes)
			}
		}
		if err == nil {
			err = tw.WriteHeader(hdr(f.Path, tar.TypeReg, int64(f.Mode), st.Size()))
		}
		if err == nil {
			var n int64
			n, err = io.Copy(tw, in)
			if err == nil && n != st.Size() {
				err = fmt.Errorf("%s changed while it was read", f.Source)
			}
		}
		in.Close()
		if err != nil {
			return fmt.Errorf("image of files: /%s: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return out.Close()
}
