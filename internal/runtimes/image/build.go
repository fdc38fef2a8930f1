package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/mse-in-go/mse/internal/atomicfile"
)

// DefaultSourceDateEpoch is the SOURCE_DATE_EPOCH of a BuildSpec that sets
// none: 2024-01-01T00:00:00Z.
const DefaultSourceDateEpoch = 1704067200

// GzipLevel is the fixed compression level of built layers. The layer
// digest (and so the image digest) depends on it and on Go's compress/gzip.
const GzipLevel = gzip.BestSpeed

// ErrNoBuilder is wrapped by Build when mmdebstrap is not installed.
var ErrNoBuilder = errors.New("mmdebstrap is not installed")

// BuildSpec is the recipe of a Debian runtime.
type BuildSpec struct {
	Suite           string   // Debian suite, e.g. "bookworm"
	Packages        []string // Debian packages on top of the essential set ("name" or "name=version")
	SourceDateEpoch int64    // 0 → DefaultSourceDateEpoch
	Mirror          string   // "" → the host's apt sources; else a mirror URL or a "deb …" line
}

// BuildResult is what Build made.
type BuildResult struct {
	Digest   string   // "sha256:…" manifest digest
	Size     int64    // uncompressed root filesystem bytes (regular files)
	Packages []string // installed packages, "name=version", sorted
	Cached   bool     // the recipe was built before; mmdebstrap did not run
}

var (
	suiteRE   = regexp.MustCompile(`^[a-z][a-z0-9.-]{0,31}$`)
	packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]{0,99}(=[A-Za-z0-9.+~:-]{1,100})?$`)
)

const maxPackages = 500

// normalize validates the spec and returns its canonical form.
func (sp BuildSpec) normalize() (BuildSpec, error) {
	if !suiteRE.MatchString(sp.Suite) {
		return sp, fmt.Errorf("build: suite %q is not a Debian suite name (e.g. bookworm)", sp.Suite)
	}
	var pkgs []string
	for _, p := range sp.Packages {
		p = strings.TrimSpace(p)
		if !packageRE.MatchString(p) {
			return sp, fmt.Errorf("build: %q is not a Debian package name (lowercase letters, digits, + . -, optionally =version)", p)
		}
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	pkgs = slices.Compact(pkgs)
	if len(pkgs) > maxPackages {
		return sp, fmt.Errorf("build: %d packages; at most %d", len(pkgs), maxPackages)
	}
	sp.Packages = pkgs
	switch {
	case sp.SourceDateEpoch == 0:
		sp.SourceDateEpoch = DefaultSourceDateEpoch
	case sp.SourceDateEpoch < 0 || sp.SourceDateEpoch > 1<<33:
		return sp, fmt.Errorf("build: SOURCE_DATE_EPOCH %d is not a time in seconds since 1970", sp.SourceDateEpoch)
	}
	m := sp.Mirror
	if m != "" {
		ok := (strings.HasPrefix(m, "http://") || strings.HasPrefix(m, "https://") || strings.HasPrefix(m, "file:///") || strings.HasPrefix(m, "deb ")) &&
			!strings.ContainsAny(m, "\n\r\x00") && len(m) <= 1024
		if !ok {
			return sp, fmt.Errorf("build: mirror %q must be an http(s):// or file:/// URL, or one \"deb …\" sources.list line", m)
		}
	}
	return sp, nil
}

// hostSources lists the host's apt sources files and hashes their content.
func hostSources() ([]string, string, error) {
	var files []string
	if fi, err := os.Stat("/etc/apt/sources.list"); err == nil && fi.Size() > 0 {
		files = append(files, "/etc/apt/sources.list")
	}
	for _, pat := range []string{"/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	slices.Sort(files)
	if len(files) == 0 {
		return nil, "", errors.New("build: the host has no apt sources (/etc/apt/sources.list, sources.list.d); set a mirror")
	}
	h := sha256.New()
	for _, f := range files {
		b, err := readFileMax(f, 1<<20)
		if err != nil {
			return nil, "", fmt.Errorf("build: host apt sources: %w", err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(b))
		h.Write(b)
	}
	return files, hex.EncodeToString(h.Sum(nil)), nil
}

type recipe struct {
	Version  int      `json:"v"`
	Variant  string   `json:"variant"`
	Suite    string   `json:"suite"`
	Packages []string `json:"packages"`
	SDE      int64    `json:"source_date_epoch"`
	Mirror   string   `json:"mirror,omitempty"`
	Sources  string   `json:"host_sources,omitempty"` // hash of the host's apt sources
	Gzip     int      `json:"gzip"`
}

type recipeFile struct {
	Recipe recipe      `json:"recipe"`
	Result BuildResult `json:"result"`
}

// Build runs mmdebstrap (variant essential, /dev skipped, SOURCE_DATE_EPOCH
// set) for the spec, packs the root filesystem tarball as a one-layer OCI
// image and adds it to the store. The same spec over the same package
// versions gives the same digest. Builds are cached by recipe: a second
// Build of the same spec (same host apt sources when Mirror is "") returns
// the first result, Cached, without running mmdebstrap, as long as the
// image is still in the store. mmdebstrap's output goes to log (may be nil).
func (s *Store) Build(ctx context.Context, spec BuildSpec, log io.Writer) (BuildResult, error) {
	sp, err := spec.normalize()
	if err != nil {
		return BuildResult{}, err
	}
	if log == nil {
		log = io.Discard
	}
	rc := recipe{Version: 1, Variant: "essential", Suite: sp.Suite, Packages: sp.Packages, SDE: sp.SourceDateEpoch, Mirror: sp.Mirror, Gzip: GzipLevel}
	var mirrors []string
	if sp.Mirror == "" {
		files, sum, err := hostSources()
		if err != nil {
			return BuildResult{}, err
		}
		mirrors, rc.Sources = files, sum
	} else {
		mirrors = []string{sp.Mirror}
	}
	if rc.Packages == nil {
		rc.Packages = []string{}
	}
	rb, _ := json.Marshal(rc)
	key := sha256.Sum256(rb)
	cachePath := filepath.Join(s.dir, "recipes", hex.EncodeToString(key[:])+".json")
	if b, err := readFileMax(cachePath, 16<<20); err == nil {
		var rf recipeFile
		if json.Unmarshal(b, &rf) == nil && rf.Recipe.Suite == rc.Suite && s.Has(rf.Result.Digest) {
			rf.Result.Cached = true
			return rf.Result, nil
		}
	}

	bin, err := exec.LookPath("mmdebstrap")
	if err != nil {
		return BuildResult{}, fmt.Errorf("build: %w (apt-get install mmdebstrap), or import an image built elsewhere", ErrNoBuilder)
	}
	tmp, release, err := s.newTemp("build-")
	if err != nil {
		return BuildResult{}, err
	}
	defer release()
	rootTar := filepath.Join(tmp, "rootfs.tar")
	args := []string{"--variant=essential", "--format=tar", "--skip=output/dev"}
	if len(sp.Packages) > 0 {
		args = append(args, "--include="+strings.Join(sp.Packages, ","))
	}
	args = append(args, sp.Suite, rootTar)
	args = append(args, mirrors...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "SOURCE_DATE_EPOCH=") }),
		"SOURCE_DATE_EPOCH="+strconv.FormatInt(sp.SourceDateEpoch, 10))
	tail := &tailBuffer{max: 4096}
	cmd.Stdout = io.MultiWriter(log, tail)
	cmd.Stderr = io.MultiWriter(log, tail)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	fmt.Fprintf(log, "+ SOURCE_DATE_EPOCH=%d %s %s\n", sp.SourceDateEpoch, bin, strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return BuildResult{}, fmt.Errorf("build: mmdebstrap: %w", ctx.Err())
		}
		return BuildResult{}, fmt.Errorf("build: mmdebstrap %s failed: %v; its last output:\n%s", sp.Suite, err, tail.String())
	}

	gzPath := filepath.Join(tmp, "layer.tar.gz")
	size, pkgs, err := s.packTar(ctx, rootTar, gzPath)
	if err != nil {
		return BuildResult{}, err
	}
	os.Remove(rootTar)
	digest, err := s.addLayerImage(ctx, gzPath, time.Unix(sp.SourceDateEpoch, 0).UTC(), v1.Config{
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels: map[string]string{
			"io.mse.runtime.suite":    sp.Suite,
			"io.mse.runtime.packages": strings.Join(sp.Packages, ","),
		},
	}, "mmdebstrap "+strings.Join(args[:len(args)-1-len(mirrors)], " ")+" "+sp.Suite)
	if err != nil {
		return BuildResult{}, fmt.Errorf("build: %w", err)
	}
	res := BuildResult{Digest: digest, Size: size, Packages: pkgs}
	b, _ := json.MarshalIndent(recipeFile{Recipe: rc, Result: res}, "", "  ")
	if err := atomicfile.Write(cachePath, append(b, '\n'), 0o644); err != nil {
		return BuildResult{}, fmt.Errorf("build: caching the result: %w", err)
	}
	fmt.Fprintf(log, "built %s: %d bytes, %d packages\n", digest, size, len(pkgs))
	return res, nil
}

// packTar gzips the mmdebstrap tarball at GzipLevel and, in the same pass,
// checks it against the limits, sums its file sizes and reads the dpkg
// status file for the installed packages.
func (s *Store) packTar(ctx context.Context, src, dst string) (int64, []string, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, nil, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, nil, err
	}
	defer out.Close()
	bw := bufio.NewWriterSize(out, 1<<20)
	gz, err := gzip.NewWriterLevel(bw, GzipLevel)
	if err != nil {
		return 0, nil, err
	}
	br := bufio.NewReaderSize(ctxReader{ctx, in}, 1<<20)
	tr := tar.NewReader(io.TeeReader(br, gz))
	var size int64
	var status []byte
	for n := 1; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, nil, fmt.Errorf("build: reading mmdebstrap's tarball: %w", err)
		}
		if n > s.lim.MaxFiles {
			return 0, nil, fmt.Errorf("build: %w: more than %d entries", ErrLimit, s.lim.MaxFiles)
		}
		if hdr.Typeflag == tar.TypeReg {
			if hdr.Size > s.lim.MaxFileBytes {
				return 0, nil, fmt.Errorf("build: %w: %s is %d bytes", ErrLimit, hdr.Name, hdr.Size)
			}
			size += hdr.Size
			if size > s.lim.MaxImageBytes {
				return 0, nil, fmt.Errorf("build: %w: the root filesystem is over %d bytes", ErrLimit, s.lim.MaxImageBytes)
			}
			if strings.TrimPrefix(hdr.Name, "./") == "var/lib/dpkg/status" && hdr.Size < 64<<20 {
				status, err = io.ReadAll(tr)
				if err != nil {
					return 0, nil, err
				}
			}
		}
	}
	if _, err := io.Copy(gz, br); err != nil { // the tar padding after the end marker
		return 0, nil, err
	}
	if err := gz.Close(); err != nil {
		return 0, nil, err
	}
	if err := bw.Flush(); err != nil {
		return 0, nil, err
	}
	if err := out.Close(); err != nil {
		return 0, nil, err
	}
	if status == nil {
		return 0, nil, errors.New("build: mmdebstrap's tarball has no var/lib/dpkg/status")
	}
	return size, parseStatus(status), nil
}

// parseStatus lists the installed packages of a dpkg status file.
func parseStatus(b []byte) []string {
	var out []string
	for _, stanza := range bytes.Split(b, []byte("\n\n")) {
		var pkg, ver, st string
		for _, line := range strings.Split(string(stanza), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || strings.HasPrefix(line, " ") {
				continue
			}
			switch k {
			case "Package":
				pkg = strings.TrimSpace(v)
			case "Version":
				ver = strings.TrimSpace(v)
			case "Status":
				st = strings.TrimSpace(v)
			}
		}
		if pkg != "" && strings.HasSuffix(st, " installed") {
			out = append(out, pkg+"="+ver)
		}
	}
	slices.Sort(out)
	return out
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
