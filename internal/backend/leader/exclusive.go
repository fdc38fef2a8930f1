package leader

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// ErrHeld is wrapped by Exclusive's error when another process holds the
// lock.
var ErrHeld = errors.New("another process holds the lock")

// ExclusiveLock is the one process allowed on a store that only one process
// may drive (a SQLite database: its single writer connection is what makes
// the loops safe). Its holder needs no election: it leads (Always) while it
// holds the lock file.
type ExclusiveLock struct {
	mu sync.Mutex
	f  *os.File
}

// Exclusive takes the lock file path (created if needed, kept afterwards)
// for this process: an advisory whole-file lock (flock) that the kernel
// drops when the process ends, however it ends. A second process gets an
// error wrapping ErrHeld that names the holder's pid. On systems without
// flock (not unix) it takes nothing and always succeeds.
func Exclusive(path string) (*ExclusiveLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("leader: lock file: %w", err)
	}
	if err := lockFile(f); err != nil {
		pid := readPID(f)
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%w: %s is locked by process %s", ErrHeld, path, pid)
		}
		return nil, fmt.Errorf("leader: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &ExclusiveLock{f: f}, nil
}

func readPID(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	if s := strings.TrimSpace(string(b[:n])); s != "" {
		if _, err := strconv.Atoi(s); err == nil {
			return s
		}
	}
	return "(unknown pid)"
}

// Close releases the lock. It is idempotent.
func (l *ExclusiveLock) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor drops the flock
	l.f = nil
	return err
}
