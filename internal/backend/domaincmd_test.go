package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// run runs mse-backend with args on dataDir and returns its output.
func runCmd(t *testing.T, dataDir string, args ...string) (string, error) {
	t.Helper()
	cmd := Command()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"--data-dir", dataDir, "--db", ""}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func mustRun(t *testing.T, dataDir string, args ...string) string {
	t.Helper()
	out, err := runCmd(t, dataDir, args...)
	if err != nil {
		t.Fatalf("mse-backend %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestDomainCommands(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, dir, "user", "add", "alice")
	mustRun(t, dir, "user", "add", "bob")

	if out := mustRun(t, dir, "domain", "reserve", "Shop.Example.com.", "--user", "alice"); !strings.Contains(out, "reserved shop.example.com for user alice") {
		t.Errorf("reserve: %q", out)
	}
	if out := mustRun(t, dir, "domain", "reserve", "shop.example.com", "--user", "alice"); !strings.Contains(out, "reserved shop.example.com for user alice") {
		t.Errorf("reserve again by the holder: %q", out)
	}
	mustRun(t, dir, "domain", "reserve", "api.example.org", "--user", "bob")

	for _, c := range []struct {
		args []string
		want string
	}{
		// The operator may know who holds a domain.
		{[]string{"domain", "reserve", "shop.example.com", "--user", "bob"}, "reserved by user alice"},
		{[]string{"domain", "reserve", "shop.example.com"}, "--user NAME is required"},
		{[]string{"domain", "reserve", "x.example", "--user", "nobody"}, `no user "nobody"`},
		{[]string{"domain", "reserve", "*.example.com", "--user", "alice"}, "wildcard"},
		{[]string{"domain", "reserve", "localhost", "--user", "alice"}, "not a fully qualified domain name"},
		{[]string{"domain", "release", "free.example.com"}, "is not reserved"},
	} {
		out, err := runCmd(t, dir, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("mse-backend %s = %v (%q), want an error containing %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}

	out := mustRun(t, dir, "domain", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "api.example.org") || !strings.Contains(lines[1], "bob") ||
		!strings.HasPrefix(lines[2], "shop.example.com") || !strings.Contains(lines[2], "alice") || !strings.Contains(lines[2], "admin") {
		t.Errorf("domain list:\n%s", out)
	}
	var rs []DomainReservationJSON
	if err := json.Unmarshal([]byte(mustRun(t, dir, "domain", "list", "--json")), &rs); err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[1].Domain != "shop.example.com" || rs[1].User != "alice" || rs[1].Proof != "admin" || rs[1].UserID == "" || rs[1].CreatedAt.IsZero() {
		t.Errorf("domain list --json = %+v", rs)
	}

	if out := mustRun(t, dir, "domain", "release", "SHOP.example.com"); !strings.Contains(out, "released") {
		t.Errorf("release: %q", out)
	}
	mustRun(t, dir, "domain", "reserve", "shop.example.com", "--user", "bob")
	if err := json.Unmarshal([]byte(mustRun(t, dir, "domain", "list", "--json")), &rs); err != nil || len(rs) != 2 || rs[1].User != "bob" {
		t.Errorf("after release and reserve by bob: %+v, %v", rs, err)
	}
}
