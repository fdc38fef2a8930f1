package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A kubelet's stop frees the addresses its sandboxes held, and a start
// frees those a dead run left (over an hour old); others stay, and so do
// the IPAM plugin's own files.
func TestPodIPsReleased(t *testing.T) {
	dir := t.TempDir()
	old := podIPDir
	podIPDir = dir
	t.Cleanup(func() { podIPDir = old })
	write := func(name, content string, age time.Duration) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(-age)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	write("10.245.0.2", "mine1\neth0", time.Minute)
	write("10.245.0.3", "other\neth0", time.Minute)
	write("10.245.0.4", "dead\neth0", 2*time.Hour)
	write("last_reserved_ip.0", "10.245.0.4", 2*time.Hour)
	write("lock", "", 2*time.Hour)

	releasePodIPs([]string{"mine1", "mine2"})
	sweepKubelet()

	for name, want := range map[string]bool{"10.245.0.2": false, "10.245.0.3": true, "10.245.0.4": false, "last_reserved_ip.0": true, "lock": true} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != want {
			t.Errorf("%s: present %v, want %v", name, err == nil, want)
		}
	}
}
