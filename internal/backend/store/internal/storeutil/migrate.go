package storeutil

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migration is one embedded schema step, named NNNN_description.sql.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations reads the *.sql files of dir in fsys, ordered by version.
// Versions must be unique and start at 1 without gaps.
func Migrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("store: migration %q: name must be NNNN_description.sql", e.Name())
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: strings.TrimSuffix(e.Name(), ".sql"), SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("store: migrations must be numbered 1, 2, 3...: found %s at position %d", m.Name, i+1)
		}
	}
	return ms, nil
}

// Pending returns the migrations not yet applied to a database, given the
// versions (and names) already applied. A database migrated by a newer binary
// (a version beyond the known migrations) is refused rather than used with a
// schema this code does not know.
func Pending(applied map[int]string, ms []Migration) ([]Migration, error) {
	for v, name := range applied {
		if v > len(ms) {
			return nil, fmt.Errorf("store: database schema is at version %d (%s), newer than this binary knows (%d): upgrade the backend", v, name, len(ms))
		}
	}
	var todo []Migration
	for _, m := range ms {
		if _, ok := applied[m.Version]; !ok {
			todo = append(todo, m)
		}
	}
	return todo, nil
}
