// Package pack is the owner side of the bundle format: it turns an app
// owner's code directory into the deterministic archive (Pack) and seals it
// into an encrypted bundle (Seal).
//
// Packing walks the directory, minus the rules in .mseignore files, and
// writes a tar archive: entries in canonical order, normalized modes, owners
// and times, only regular files and directories. Sealing encrypts that
// archive under a code key with bundle.Encrypt; the code digest is the
// SHA-256 of the bundle written.
//
// The node reads bundles with package internal/bundle alone and never links
// this package. The format is specified in docs/bundle-format.md.
package pack

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"

	"github.com/mse-in-go/mse/internal/bundle"
)

// IgnoreFile is the name of the files that hold ignore rules, with the syntax
// and meaning of .gitignore. A rule file applies to its directory and below;
// rules in deeper files take precedence. The .mseignore files themselves are
// packed like any other file, unless a rule excludes them (".mseignore" in
// .mseignore does), as git does with .gitignore.
const IgnoreFile = ".mseignore"

// maxIgnoreFileSize bounds an .mseignore file (a whole number of MiB: the
// error says it in MiB).
const maxIgnoreFileSize = 1 << 20

// Pack writes the code directory dir to w as a deterministic tar archive:
// the same tree gives the same bytes, whatever the times, owners, umask or
// directory order of the file system.
//
// Paths matched by .mseignore rules are left out. Only regular files and
// directories can be packed: a symbolic link, device, FIFO or socket that is
// not ignored is an error naming it. Limits are enforced (zero fields mean the
// defaults).
//
// Pack holds one directory listing per level of the tree in memory, never
// file contents.
func Pack(dir string, w io.Writer, lim bundle.Limits) (bundle.Stats, error) {
	p := &packer{
		root: dir,
		tw:   tar.NewWriter(w),
		lim:  lim.WithDefaults(),
		buf:  make([]byte, 64<<10),
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return bundle.Stats{}, fmt.Errorf("code directory: %w", err)
	}
	if !fi.IsDir() {
		return bundle.Stats{}, fmt.Errorf("%s: the code directory is not a directory", dir)
	}
	if err := p.walk(nil, nil); err != nil {
		return p.stats, err
	}
	if err := p.tw.Close(); err != nil {
		return p.stats, fmt.Errorf("writing the archive: %w", err)
	}
	return p.stats, nil
}

type packer struct {
	root  string
	tw    *tar.Writer
	lim   bundle.Limits
	stats bundle.Stats
	buf   []byte
}

// osPath returns the file system path of an entry, for reading and errors.
func (p *packer) osPath(rel []string) string {
	return filepath.Join(append([]string{p.root}, rel...)...)
}

// walk packs the contents of the directory rel (nil for the root), with the
// ignore patterns of its ancestors.
func (p *packer) walk(rel []string, patterns []gitignore.Pattern) error {
	dirPath := p.osPath(rel)
	patterns, err := readIgnoreFile(dirPath, rel, patterns)
	if err != nil {
		return err
	}
	m := gitignore.NewMatcher(patterns)
	// os.ReadDir sorts by name, bytewise: a depth-first walk in that order
	// is the canonical archive order (see docs/bundle-format.md).
	entries, err := os.ReadDir(dirPath)
	if err != nil {
		return fmt.Errorf("reading the code directory: %w", err)
	}
	for _, e := range entries {
		path := append(rel[:len(rel):len(rel)], e.Name())
		t := e.Type()
		if m.Match(path, t.IsDir()) {
			continue
		}
		switch {
		case t.IsDir():
			if err := p.add(path, true); err != nil {
				return err
			}
			if err := p.walk(path, patterns); err != nil {
				return err
			}
		case t.IsRegular():
			if err := p.add(path, false); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: %s are not allowed in a bundle; replace it with the file it points to or add it to %s",
				p.osPath(path), kindName(t), IgnoreFile)
		}
	}
	return nil
}

func kindName(t fs.FileMode) string {
	switch {
	case t&fs.ModeSymlink != 0:
		return "symbolic links"
	case t&fs.ModeNamedPipe != 0:
		return "named pipes (FIFOs)"
	case t&fs.ModeSocket != 0:
		return "sockets"
	case t&fs.ModeDevice != 0:
		return "device files"
	default:
		return "special files (" + t.String() + ")"
	}
}

// add writes one entry: a directory, or a regular file, which it opens and
// describes from the open file (one stat per file).
func (p *packer) add(rel []string, isDir bool) error {
	name := strings.Join(rel, "/")
	osPath := p.osPath(rel)
	if len(name) > p.lim.MaxPathLen {
		return &bundle.LimitError{Limit: "MaxPathLen", Max: int64(p.lim.MaxPathLen), Path: osPath, Packing: true}
	}
	if strings.ContainsRune(name, 0) {
		return fmt.Errorf("%s: file names with NUL bytes cannot be packed", osPath)
	}
	if p.stats.Files+p.stats.Dirs >= p.lim.MaxFiles {
		return &bundle.LimitError{Limit: "MaxFiles", Max: int64(p.lim.MaxFiles), Path: osPath, Packing: true}
	}
	hdr := &tar.Header{
		Name:    name,
		ModTime: time.Unix(0, 0),
		Format:  tar.FormatPAX, // PAX records only when ustar cannot hold the name
	}
	if isDir {
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		hdr.Mode = bundle.ModeDir
		if err := p.tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: writing the archive: %w", osPath, err)
		}
		p.stats.Dirs++
		return nil
	}

	f, err := os.OpenFile(osPath, os.O_RDONLY|oNoFollow, 0)
	if err != nil {
		return fmt.Errorf("packing: %w", err)
	}
	defer f.Close()
	// Stat the open file: what we read is what we describe, even if the
	// directory changes under us.
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("packing: %w", err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s: changed into something other than a file while packing", osPath)
	}
	size := info.Size()
	if size > p.lim.MaxFileSize {
		return &bundle.LimitError{Limit: "MaxFileSize", Max: p.lim.MaxFileSize, Path: osPath, Packing: true}
	}
	if size > p.lim.MaxTotalSize-p.stats.Bytes {
		return &bundle.LimitError{Limit: "MaxTotalSize", Max: p.lim.MaxTotalSize, Path: osPath, Packing: true}
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = size
	hdr.Mode = bundle.ModeFile
	if info.Mode().Perm()&0o111 != 0 {
		hdr.Mode = bundle.ModeExec
	}
	if err := p.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: writing the archive: %w", osPath, err)
	}
	n, err := io.CopyBuffer(p.tw, io.LimitReader(f, size), p.buf)
	if err != nil {
		return fmt.Errorf("%s: packing: %w", osPath, err)
	}
	if n != size {
		return fmt.Errorf("%s: the file shrank while it was being packed; pack again", osPath)
	}
	if k, _ := f.Read(p.buf[:1]); k != 0 {
		return fmt.Errorf("%s: the file grew while it was being packed; pack again", osPath)
	}
	p.stats.Files++
	p.stats.Bytes += size
	return nil
}

// readIgnoreFile appends the patterns of dir/.mseignore, if there is one, to
// the patterns inherited from the parent directories.
func readIgnoreFile(dir string, rel []string, inherited []gitignore.Pattern) ([]gitignore.Pattern, error) {
	path := filepath.Join(dir, IgnoreFile)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return inherited, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ignore rules: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: must be a regular file", path)
	}
	if fi.Size() > maxIgnoreFileSize {
		return nil, fmt.Errorf("%s: larger than %d MiB; is it really a list of ignore rules?", path, maxIgnoreFileSize>>20)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading ignore rules: %w", err)
	}
	ps := inherited[:len(inherited):len(inherited)] // never share the parent's backing array
	domain := append([]string(nil), rel...)
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		ps = append(ps, gitignore.ParsePattern(line, domain))
	}
	return ps, nil
}
