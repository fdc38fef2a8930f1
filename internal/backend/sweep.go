package backend

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// sweepTemp removes, in the backend's own directories, the temporary files
// atomicfile.Write leaves when the process dies between creating and
// renaming them (".NAME.tmp*"). It runs at start-up, before anything writes.
// Node directories belong to the runner; bundles' partial uploads to the
// blob store's Sweep.
func sweepTemp(log *slog.Logger, dirs ...string) {
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			n := e.Name()
			if !e.Type().IsRegular() || !strings.HasPrefix(n, ".") || !strings.Contains(n, ".tmp") {
				continue
			}
			p := filepath.Join(dir, n)
			if err := os.Remove(p); err != nil {
				log.Warn("cannot remove a temporary file", "path", p, "err", err)
				continue
			}
			log.Info("removed a temporary file left by a crash", "path", p)
		}
	}
}
