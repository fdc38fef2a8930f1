package image

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Export writes one image of the store as an OCI image layout in a tar
// stream (oci-layout, index.json naming only that image, and its blobs), the
// form Import reads back. Runtime images are public: the API serves them so
// that owners run `mse cloud localtest` in the very image their nodes run in.
func (s *Store) Export(ctx context.Context, digest string, w io.Writer) error {
	return s.ExportRef(ctx, digest, "", w)
}

// ExportRef is Export naming the image ref in index.json (annotations
// org.opencontainers.image.ref.name and io.containerd.image.name, which
// `ctr images import` names the image by); "" names none.
func (s *Store) ExportRef(ctx context.Context, digest, ref string, w io.Writer) error {
	h, err := parseDigest(digest)
	if err != nil {
		return err
	}
	if !s.Has(digest) {
		return fmt.Errorf("%w: runtime %s is not in the store", ErrNotFound, short(digest))
	}
	m, err := s.readManifest(h)
	if err != nil {
		return err
	}
	mb, err := readFileMax(s.blobPath(h), maxManifestBytes)
	if err != nil {
		return err
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: m.MediaType, Digest: h, Size: int64(len(mb)),
		Platform: &v1.Platform{OS: "linux", Architecture: "amd64"},
	}}}
	if ref != "" {
		idx.Manifests[0].Annotations = map[string]string{"org.opencontainers.image.ref.name": ref, "io.containerd.image.name": ref}
	}
	if idx.Manifests[0].MediaType == "" {
		idx.Manifests[0].MediaType = types.OCIManifestSchema1
	}
	ib, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	file := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := file("index.json", ib); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	blobs := append([]v1.Hash{h, m.Config.Digest}, layerDigests(m)...)
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := os.Open(s.blobPath(b))
		if err != nil {
			return fmt.Errorf("runtime %s: blob %s: %w", short(digest), b, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		err = tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + b.Hex, Mode: 0o644, Size: st.Size(), Typeflag: tar.TypeReg})
		if err == nil {
			_, err = io.Copy(tw, ctxReader{ctx: ctx, r: f})
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

func layerDigests(m *v1.Manifest) []v1.Hash {
	var out []v1.Hash
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}
