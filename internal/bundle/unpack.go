package bundle

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// Unpack reads an archive written by pack.Pack from r and writes it into dir,
// which must not exist (its parent must) or be an empty directory.
//
// The archive is untrusted input. Unpack refuses, with an error naming the
// entry: absolute paths, "." and ".." components, links of any kind, devices,
// FIFOs and any type but regular files and directories, duplicate entries,
// entries out of canonical order or without their parent directory before
// them, and anything over the limits. It never writes outside dir: files are
// created through an os.Root with O_EXCL|O_NOFOLLOW, and only with modes 0644
// or 0755 (directories 0755; dir itself is created 0700).
//
// On error, Unpack removes what it wrote, leaving dir as it found it (absent
// or empty).
func Unpack(r io.Reader, dir string, lim Limits) (stats Stats, err error) {
	created := false
	if fi, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return Stats{}, fmt.Errorf("creating the app directory: %w", err)
		}
		created = true
	} else if err != nil {
		return Stats{}, fmt.Errorf("app directory: %w", err)
	} else if !fi.IsDir() {
		return Stats{}, fmt.Errorf("%s: the app directory exists and is not a directory", dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("app directory: %w", err)
	}
	defer root.Close()
	if !created {
		if err := checkEmpty(root); err != nil {
			return Stats{}, fmt.Errorf("%s: %w", dir, err)
		}
	}
	defer func() {
		if err == nil {
			return
		}
		if created {
			os.RemoveAll(dir)
			return
		}
		if names, lerr := listDir(root); lerr == nil {
			for _, n := range names {
				root.RemoveAll(n)
			}
		}
	}()
	return extract(r, lim, root)
}

func checkEmpty(root *os.Root) error {
	names, err := listDir(root)
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return errors.New("the app directory is not empty; unpack into a new or empty directory")
	}
	return nil
}

func listDir(root *os.Root) ([]string, error) {
	d, err := root.Open(".")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// extract reads and validates the whole archive; with a root it also writes
// the entries there. It reads r to its end: nothing may follow the archive.
func extract(r io.Reader, lim Limits, root *os.Root) (Stats, error) {
	lim = lim.WithDefaults()
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	v := validator{lim: lim}
	buf := make([]byte, 64<<10)
	var endOfLast, padding int64 // where the last entry's content ended, and its padding
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			// Go's reader also reports io.EOF for a stream that simply stops
			// between entries; require the end-of-archive marker: exactly two
			// zero blocks after the last entry.
			if cr.n-endOfLast-padding != 2*512 {
				return v.stats, errors.New("bundle archive is truncated: it does not end with the end-of-archive marker")
			}
			break
		}
		if err != nil {
			return v.stats, fmt.Errorf("bundle archive is malformed: %w", v.explain(err))
		}
		name, isDir, mode, err := v.check(hdr)
		if err != nil {
			return v.stats, err
		}
		if isDir {
			if root != nil {
				if err := root.Mkdir(name, 0o700); err != nil {
					return v.stats, fmt.Errorf("unpacking %q: %w", name, err)
				}
				if err := root.Chmod(name, ModeDir); err != nil {
					return v.stats, fmt.Errorf("unpacking %q: %w", name, err)
				}
			}
		} else if err := writeFile(root, name, tr, hdr.Size, mode, buf); err != nil {
			return v.stats, err
		}
		endOfLast = cr.n
		padding = (512 - hdr.Size%512) % 512
	}
	// Nothing may follow the archive. With Decrypt's reader, this read also
	// authenticates the last segment: Check and Open see the whole bundle.
	var one [1]byte
	for i := 0; ; i++ {
		if i == 100 {
			return v.stats, io.ErrNoProgress
		}
		n, err := r.Read(one[:])
		if n > 0 {
			return v.stats, errors.New("bundle archive is malformed: data follows the end-of-archive marker")
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return v.stats, err
		}
	}
	return v.stats, nil
}

func writeFile(root *os.Root, name string, r io.Reader, size int64, mode fs.FileMode, buf []byte) error {
	if root == nil {
		// Check: read (and so authenticate) the contents, write nothing.
		n, err := io.CopyBuffer(io.Discard, io.LimitReader(r, size), buf)
		if err == nil && n != size {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return contentError(name, err)
		}
		return nil
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o600)
	if err != nil {
		return fmt.Errorf("unpacking %q: %w", name, err)
	}
	n, err := io.CopyBuffer(onlyWriter{f}, io.LimitReader(r, size), buf)
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		f.Close()
		return contentError(name, err)
	}
	err = f.Chmod(mode) // exact mode, whatever the umask
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("unpacking %q: %w", name, err)
	}
	return nil
}

// contentError explains an error while reading an entry's contents: the
// archive ends early, or the bundle's stream fails to authenticate.
func contentError(name string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("bundle archive is malformed: it ends in the middle of entry %q (%w)", name, err)
	}
	return fmt.Errorf("reading entry %q: %w", name, err)
}

// onlyWriter hides *os.File's ReadFrom, so that io.CopyBuffer uses our buffer.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// validator checks entries one by one, in constant memory but for the stack
// of open directories (bounded by MaxPathLen).
type validator struct {
	lim   Limits
	stats Stats
	prev  string   // key of the previous entry
	dirs  []string // keys of the directories that contain the current entry, outermost first
	any   bool
}

// explain adds advice to errors of archive/tar.
func (v *validator) explain(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("it ends in the middle of an entry (%w)", err)
	}
	return err
}

// check validates one header and returns the entry's path (without a trailing
// slash), whether it is a directory, and the mode to give it.
func (v *validator) check(hdr *tar.Header) (name string, isDir bool, mode fs.FileMode, err error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("bundle archive refused: entry %q: %s", hdr.Name, fmt.Sprintf(format, args...))
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
	case tar.TypeDir:
		isDir = true
	case tar.TypeSymlink:
		return "", false, 0, refuse("symbolic links are not allowed in a bundle")
	case tar.TypeLink:
		return "", false, 0, refuse("hard links are not allowed in a bundle")
	case tar.TypeChar, tar.TypeBlock:
		return "", false, 0, refuse("device files are not allowed in a bundle")
	case tar.TypeFifo:
		return "", false, 0, refuse("named pipes (FIFOs) are not allowed in a bundle")
	default:
		return "", false, 0, refuse("entries of type %q are not allowed in a bundle: only regular files and directories", hdr.Typeflag)
	}

	name = hdr.Name
	if isDir {
		if !strings.HasSuffix(name, "/") {
			return "", false, 0, refuse("a directory's name must end with a slash")
		}
		name = name[:len(name)-1]
		if hdr.Size != 0 {
			return "", false, 0, refuse("a directory entry has contents")
		}
	}
	if len(name) > v.lim.MaxPathLen {
		return "", false, 0, &LimitError{Limit: "MaxPathLen", Max: int64(v.lim.MaxPathLen), Path: fmt.Sprintf("entry %q", truncate(name, 80))}
	}
	if err := checkPath(name); err != nil {
		return "", false, 0, refuse("%v", err)
	}

	// Canonical order: strictly increasing, which also rules out duplicates
	// (a file and a directory of the same name included).
	if v.any {
		switch c := comparePaths(v.prev, name); {
		case c == 0:
			return "", false, 0, refuse("duplicate entry")
		case c > 0:
			return "", false, 0, refuse("out of order: entries must be sorted (see docs/bundle-format.md)")
		}
	}
	// Its parent must be the innermost open directory.
	for len(v.dirs) > 0 && !strings.HasPrefix(name, v.dirs[len(v.dirs)-1]+"/") {
		v.dirs = v.dirs[:len(v.dirs)-1]
	}
	parent := ""
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		parent = name[:i]
	}
	top := ""
	if len(v.dirs) > 0 {
		top = v.dirs[len(v.dirs)-1]
	}
	if parent != top {
		return "", false, 0, refuse("its directory %q is not an entry before it", parent)
	}
	v.prev, v.any = name, true

	if v.stats.Files+v.stats.Dirs >= v.lim.MaxFiles {
		return "", false, 0, &LimitError{Limit: "MaxFiles", Max: int64(v.lim.MaxFiles), Path: fmt.Sprintf("entry %q", name)}
	}
	if isDir {
		v.dirs = append(v.dirs, name)
		v.stats.Dirs++
		return name, true, ModeDir, nil
	}
	if hdr.Size > v.lim.MaxFileSize {
		return "", false, 0, &LimitError{Limit: "MaxFileSize", Max: v.lim.MaxFileSize, Path: fmt.Sprintf("entry %q", name)}
	}
	if hdr.Size > v.lim.MaxTotalSize-v.stats.Bytes {
		return "", false, 0, &LimitError{Limit: "MaxTotalSize", Max: v.lim.MaxTotalSize, Path: fmt.Sprintf("entry %q", name)}
	}
	v.stats.Files++
	v.stats.Bytes += hdr.Size
	mode = ModeFile
	if hdr.Mode&0o111 != 0 {
		mode = ModeExec
	}
	return name, false, mode, nil
}

// checkPath accepts only relative, clean, slash-separated paths.
func checkPath(name string) error {
	if name == "" {
		return errors.New("empty path")
	}
	if name[0] == '/' {
		return errors.New("absolute paths are not allowed in a bundle")
	}
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "":
			return errors.New("empty path component (double or trailing slash)")
		case ".":
			return errors.New(`"." path components are not allowed in a bundle`)
		case "..":
			return errors.New(`".." path components are not allowed in a bundle`)
		}
	}
	if strings.ContainsRune(name, 0) {
		return errors.New("NUL byte in path")
	}
	return nil
}

// comparePaths orders paths component by component, bytewise: the order of a
// depth-first walk that visits each directory's entries sorted by name. It is
// the bytewise order of the paths with '/' ranked below every other byte.
func comparePaths(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca == '/' {
			return -1
		}
		if cb == '/' {
			return 1
		}
		if ca < cb {
			return -1
		}
		return 1
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
