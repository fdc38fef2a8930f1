package local

import "testing"

// TestHandleContainer: a handle names its container (pool-… for a pooled
// node); one stored before the pool names none, and its container is the
// app id.
func TestHandleContainer(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"pid":7,"dir":"/d/app1","run_dir":"/d/app1/run"}`, "app1"},
		{`{"pid":7,"container":"pool-0123","dir":"/d/pool-0123","run_dir":"/d/pool-0123/run"}`, "pool-0123"},
	} {
		h, err := parseHandle([]byte(c.json))
		if err != nil {
			t.Fatal(err)
		}
		if got := h.container("app1"); got != c.want {
			t.Errorf("%s: container %q, want %q", c.json, got, c.want)
		}
	}
}
