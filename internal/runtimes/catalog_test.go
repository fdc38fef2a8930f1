package runtimes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var (
	dA = "sha256:" + strings.Repeat("a", 64)
	dB = "sha256:" + strings.Repeat("b", 64)
)

func testEntries() []Entry {
	return []Entry{
		{Name: "flask", Image: "mse/flask:bookworm", Digest: dA, Kind: KindWSGI},
		{Name: "fastapi", Image: "mse/fastapi:bookworm", Digest: dB, Kind: KindASGI},
		{Name: "plain", Image: "registry.example/plain", Digest: dB, Kind: KindAny},
	}
}

func TestParseRef(t *testing.T) {
	for _, c := range []struct {
		in, name, digest, err string
	}{
		{in: "flask", name: "flask"},
		{in: " mse/flask:bookworm ", name: "mse/flask:bookworm"},
		{in: "mse/flask:bookworm@" + dA, name: "mse/flask:bookworm", digest: dA},
		{in: "", err: "is empty"},
		{in: "a b", err: "has spaces"},
		{in: "x@sha256:abc", err: "must be sha256: and 64 lowercase hex"},
		{in: "x@sha256:" + strings.Repeat("A", 64), err: "must be sha256: and 64 lowercase hex"},
		{in: "@" + dA, err: "names no image"},
		{in: strings.Repeat("x", 513), err: "longer than 512"},
	} {
		r, err := ParseRef(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseRef(%q) = %+v, %v; want error %q", c.in, r, err, c.err)
			}
			continue
		}
		if err != nil || r.Name != c.name || r.Digest != c.digest {
			t.Errorf("ParseRef(%q) = %+v, %v", c.in, r, err)
		}
	}
}

func TestMatch(t *testing.T) {
	es := testEntries()
	for _, c := range []struct {
		ref, want, err string
	}{
		{ref: "flask", want: "flask"},
		{ref: "mse/flask:bookworm", want: "flask"},
		{ref: "docker.io/mse/fastapi:bookworm", want: "fastapi"},
		{ref: "registry.example/plain:latest", want: "plain"},
		{ref: "mse/flask:bookworm@" + dA, want: "flask"},
		{ref: "mse/flask:bookworm@" + dB, err: "is pinned to sha256:bbbbbbbbbbbb…, but the operator's mse/flask:bookworm is " + dA},
		{ref: "ghcr.io/cosmian/mse-flask:20230228091325", err: `did you mean "mse/flask:bookworm"?`},
		{ref: "mse-fastapi", err: `did you mean "mse/fastapi:bookworm"?`},
		{ref: "mse/flask:bullseye", err: `did you mean "mse/flask:bookworm"?`},
	} {
		e, err := Match(es, c.ref)
		if c.err != "" {
			if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Match(%q) = %+v, %v; want %q", c.ref, e, err, c.err)
			}
			continue
		}
		if err != nil || e.Name != c.want {
			t.Errorf("Match(%q) = %+v, %v; want %s", c.ref, e, err, c.want)
		}
	}
	if _, err := Match(nil, "flask"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "offers no runtime yet") {
		t.Errorf("empty catalog: %v", err)
	}
	// The offered list names every runtime, closest first.
	_, err := Match(es, "fastapi2")
	if err == nil || !strings.Contains(err.Error(), "Offered: mse/fastapi:bookworm (fastapi, asgi), ") {
		t.Errorf("offered list: %v", err)
	}
}

func TestEntryValidate(t *testing.T) {
	good := testEntries()[0]
	for _, c := range []struct {
		mod func(*Entry)
		err string
	}{
		{func(e *Entry) { e.Name = "Flask" }, "runtime name"},
		{func(e *Entry) { e.Name = "-x" }, "runtime name"},
		{func(e *Entry) { e.Image = "a b" }, "image reference"},
		{func(e *Entry) { e.Image = "a@" + dA }, "without digest"},
		{func(e *Entry) { e.Digest = "sha256:abc" }, "digest"},
		{func(e *Entry) { e.Kind = "cgi" }, "kind"},
	} {
		e := good
		c.mod(&e)
		if err := e.Validate(); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%+v: %v, want %q", e, err, c.err)
		}
	}
	if err := good.Validate(); err != nil {
		t.Error(err)
	}
}

func TestCatalogFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtimes.json")
	c, err := Load(path) // missing: empty
	if err != nil || len(c.Entries()) != 0 {
		t.Fatalf("missing file: %v %v", c, err)
	}
	for _, e := range testEntries() {
		if err := c.Put(e); err != nil {
			t.Fatal(err)
		}
	}
	// Replacing by name keeps the order; another name for the same image is refused.
	e := testEntries()[0]
	e.Digest = dB
	if err := c.Put(e); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(Entry{Name: "flask2", Image: "mse/flask:bookworm", Digest: dA, Kind: KindWSGI}); err == nil || !strings.Contains(err.Error(), "already offered as flask") {
		t.Errorf("duplicate image: %v", err)
	}
	c2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := c2.Entries(); len(got) != 3 || got[0].Name != "flask" || got[0].Digest != dB {
		t.Fatalf("reloaded %+v", got)
	}
	if _, err := c2.Remove("nope"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "offered: flask, fastapi, plain") {
		t.Errorf("remove unknown: %v", err)
	}
	if _, err := c2.Remove("fastapi"); err != nil {
		t.Fatal(err)
	}
	if c3, _ := Load(path); len(c3.Entries()) != 2 {
		t.Errorf("after remove: %+v", c3.Entries())
	}
	// A hand-edited file is checked like Put's input.
	for body, want := range map[string]string{
		`{"runtimes":[{"name":"x","image":"x","digest":"sha256:1","kind":"wsgi"}]}`: "digest",
		`{"runtimes":[],"extra":1}`: "unknown field",
		`{"runtimes":[{"name":"a","image":"i","digest":"` + dA + `","kind":"wsgi"},{"name":"a","image":"j","digest":"` + dA + `","kind":"wsgi"}]}`: "listed twice",
	} {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%s) = %v, want %q", body, err, want)
		}
	}
}
