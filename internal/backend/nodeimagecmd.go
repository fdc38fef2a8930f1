package backend

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/runtimes/image"
)

// NodeImageSpec is what `mse-backend node-image` builds: the image of the
// init container of the nodes' pods on Kubernetes (docs/kubernetes.md).
type NodeImageSpec struct {
	NodeBinary, FetchBinary string
	// SourceDateEpoch fixes the timestamps (0: image.DefaultSourceDateEpoch).
	SourceDateEpoch int64
}

// NodeImage is what BuildNodeImage made.
type NodeImage struct {
	Digest string // the manifest digest, "sha256:…"
	// NodeSHA256 is the hex SHA-256 of its /mse-node (--node-measurement).
	NodeSHA256 string
}

// BuildNodeImage builds the node image (/mse-node and /mse-fetch, mode 0555,
// user 65532) reproducibly and writes it to out as an OCI image layout tar
// naming it ref (for `ctr images import`).
func BuildNodeImage(ctx context.Context, spec NodeImageSpec, ref string, out io.Writer) (NodeImage, error) {
	m, err := sim.MeasureFile(spec.NodeBinary)
	if err != nil {
		return NodeImage{}, fmt.Errorf("node image: mse-node: %w", err)
	}
	nodeSum := hex.EncodeToString(m[:])
	d, err := buildImage(ctx, "node image", image.FilesSpec{
		Files: []image.File{
			{Path: "/mse-node", Mode: 0o555, Source: spec.NodeBinary},
			{Path: "/mse-fetch", Mode: 0o555, Source: spec.FetchBinary},
		},
		Labels:          map[string]string{"io.mse.node.sha256": nodeSum},
		User:            "65532",
		SourceDateEpoch: spec.SourceDateEpoch,
	}, ref, out)
	if err != nil {
		return NodeImage{}, err
	}
	return NodeImage{Digest: d, NodeSHA256: nodeSum}, nil
}

// BuildBackendImage builds the backend's own image (deploy/backend.yaml):
// /usr/local/bin/mse-backend as the entrypoint and the CA certificates it
// verifies PostgreSQL, S3 and ACME servers with, reproducibly, written to
// out as an OCI image layout tar naming it ref.
func BuildBackendImage(ctx context.Context, backendBinary, caCerts string, epoch int64, ref string, out io.Writer) (string, error) {
	return buildImage(ctx, "backend image", image.FilesSpec{
		Files: []image.File{
			{Path: "/usr/local/bin/mse-backend", Mode: 0o555, Source: backendBinary},
			{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o444, Source: caCerts},
		},
		Entrypoint:      []string{"/usr/local/bin/mse-backend"},
		Env:             []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		User:            "65532",
		SourceDateEpoch: epoch,
	}, ref, out)
}

// buildImage builds the image files describes (what names it in errors) in a
// throwaway image store, and writes it to out as an OCI image layout tar
// naming it ref. It returns the manifest digest, "sha256:…": the same files
// give the same digest.
func buildImage(ctx context.Context, what string, files image.FilesSpec, ref string, out io.Writer) (string, error) {
	tmp, err := os.MkdirTemp("", "mse-image-")
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	defer os.RemoveAll(tmp)
	st, err := image.Open(tmp, image.DefaultLimits())
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	d, err := st.AddFiles(ctx, files)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if err := st.ExportRef(ctx, d, ref, out); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return d, nil
}

// exportImage checks ref (--ref: a registry/repository:tag) and writes the
// image build makes under that name to path (--out) atomically. It returns
// the name as checked and its repository (for REPOSITORY@DIGEST).
func exportImage(path, ref string, build func(ref string, w io.Writer) error) (name, repo string, err error) {
	r, err := imageRef(ref)
	if err != nil {
		return "", "", err
	}
	if err := writeImage(path, func(w io.Writer) error { return build(r.String(), w) }); err != nil {
		return "", "", err
	}
	return r.String(), strings.TrimSuffix(r.String(), ":"+r.TagStr()), nil
}

// writeImage writes the image built by build to path atomically.
func writeImage(path string, build func(w io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename: nothing
	err = build(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	return err
}

// imageRef checks --ref: a registry/repository:tag.
func imageRef(ref string) (name.Tag, error) {
	r, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("--ref %q: %w (a registry/repository:tag, e.g. registry.example/mse/node:v1)", ref, err)
	}
	return r, nil
}

func nodeImageCommand() *cobra.Command {
	var spec NodeImageSpec
	var out, ref string
	cmd := &cobra.Command{
		Use:   "node-image --out FILE",
		Short: "Build the node image of the kubernetes runner (/mse-node, /mse-fetch) as an OCI layout tar",
		Long: "Build the image the kubernetes runner's pods start with (--node-image): /mse-node and /mse-fetch, reproducibly " +
			"(the same binaries give the same digest). Push it to a registry (crane push FILE REF, skopeo copy oci-archive:FILE …) " +
			"or import it into containerd (ctr -n k8s.io images import FILE); scripts/node-image.sh builds the binaries and runs this.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, _ := os.Executable()
			if spec.NodeBinary == "" {
				spec.NodeBinary = filepath.Join(filepath.Dir(exe), "mse-node")
			}
			if spec.FetchBinary == "" {
				spec.FetchBinary = filepath.Join(filepath.Dir(exe), "mse-fetch")
			}
			var res NodeImage
			name, repo, err := exportImage(out, ref, func(ref string, w io.Writer) (err error) {
				res, err = BuildNodeImage(cmd.Context(), spec, ref, w)
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s as %s\n  --node-image %s@%s --node-measurement %s\n", out, res.Digest, name, repo, res.Digest, res.NodeSHA256)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "the OCI image layout tar to write")
	f.StringVar(&ref, "ref", "localhost/mse/node:dev", "the name the tar gives the image (registry/repository:tag, as the kubelet will ask for it)")
	f.StringVar(&spec.NodeBinary, "node-binary", "", "mse-node to put in (default: next to mse-backend)")
	f.StringVar(&spec.FetchBinary, "fetch-binary", "", "mse-fetch to put in (default: next to mse-backend)")
	f.Int64Var(&spec.SourceDateEpoch, "source-date-epoch", 0, "timestamp of the image's files and config (default: image.DefaultSourceDateEpoch)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func backendImageCommand() *cobra.Command {
	var out, ref, bin, ca string
	var epoch int64
	cmd := &cobra.Command{
		Use:   "backend-image --out FILE",
		Short: "Build the image of mse-backend itself (deploy/) as an OCI layout tar",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bin == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				bin = exe
			}
			var d string
			name, repo, err := exportImage(out, ref, func(ref string, w io.Writer) (err error) {
				d, err = BuildBackendImage(cmd.Context(), bin, ca, epoch, ref, w)
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s as %s\n  image: %s@%s\n", out, d, name, repo, d)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "the OCI image layout tar to write")
	f.StringVar(&ref, "ref", "localhost/mse/backend:dev", "the name the tar gives the image (registry/repository:tag)")
	f.StringVar(&bin, "backend-binary", "", "the mse-backend to put in (default: this one; build it with CGO_ENABLED=0)")
	f.StringVar(&ca, "ca-certificates", "/etc/ssl/certs/ca-certificates.crt", "the PEM bundle of CA certificates to put in")
	f.Int64Var(&epoch, "source-date-epoch", 0, "timestamp of the image's files and config (default: image.DefaultSourceDateEpoch)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}
