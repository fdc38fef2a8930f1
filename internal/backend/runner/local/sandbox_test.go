package local

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func testSpec(rootless bool) sandboxSpec {
	s := sandboxSpec{AppID: "app1", Rootfs: "/rootfs", RunDir: "/run-dir", UID: 200003, MemoryMiB: 512, Cores: 2, Args: []string{"--app-id", "app1"}}
	if rootless {
		s.Rootless, s.HostUID, s.HostGID, s.NoFile = true, 999, 998, 4096
	}
	return s
}

func hasNS(c *specs.Spec, t specs.LinuxNamespaceType) bool {
	return slices.ContainsFunc(c.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == t && n.Path == "" })
}

func mount(c *specs.Spec, dst string) *specs.Mount {
	for i := range c.Mounts {
		if c.Mounts[i].Destination == dst {
			return &c.Mounts[i]
		}
	}
	return nil
}

// Under root: the node's own host UID, cgroup limits, no user namespace.
func TestOCIConfigRoot(t *testing.T) {
	c := ociConfig(testSpec(false))
	if u := c.Process.User; u.UID != 200003 || u.GID != 200003 || len(u.AdditionalGids) != 0 {
		t.Errorf("user %+v", u)
	}
	if hasNS(c, specs.UserNamespace) || len(c.Linux.UIDMappings) != 0 || len(c.Linux.GIDMappings) != 0 {
		t.Errorf("a user namespace under root: %+v %+v", c.Linux.Namespaces, c.Linux.UIDMappings)
	}
	r := c.Linux.Resources
	if r == nil || r.Memory == nil || *r.Memory.Limit != 512<<20 || r.CPU == nil || *r.CPU.Quota != 200000 || r.Pids == nil || r.Pids.Limit != 4096 {
		t.Errorf("resources %+v", r)
	}
	if c.Linux.CgroupsPath != "mse-node-app1" {
		t.Errorf("cgroups path %q", c.Linux.CgroupsPath)
	}
	if m := mount(c, "/run"); m == nil || !slices.Contains(m.Options, "uid=200003") || !slices.Contains(m.Options, "gid=200003") {
		t.Errorf("/run %+v", m)
	}
	if rl := c.Process.Rlimits[0]; rl.Type != "RLIMIT_NOFILE" || rl.Hard != 8192 {
		t.Errorf("rlimit %+v", rl)
	}
}

// Without root: a user namespace mapping its root alone to the runner's
// IDs, the node as that root with no capabilities, no cgroup limits, no
// uid= options, RLIMIT_NOFILE within the runner's; the rest as under root.
func TestOCIConfigRootless(t *testing.T) {
	root, c := ociConfig(testSpec(false)), ociConfig(testSpec(true))
	if u := c.Process.User; u.UID != 0 || u.GID != 0 || len(u.AdditionalGids) != 0 {
		t.Errorf("user %+v", u)
	}
	for _, ns := range []specs.LinuxNamespaceType{specs.UserNamespace, specs.MountNamespace, specs.PIDNamespace, specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace} {
		if !hasNS(c, ns) {
			t.Errorf("no new %s namespace", ns)
		}
	}
	if m := c.Linux.UIDMappings; len(m) != 1 || m[0] != (specs.LinuxIDMapping{ContainerID: 0, HostID: 999, Size: 1}) {
		t.Errorf("uid mappings %+v", m)
	}
	if m := c.Linux.GIDMappings; len(m) != 1 || m[0] != (specs.LinuxIDMapping{ContainerID: 0, HostID: 998, Size: 1}) {
		t.Errorf("gid mappings %+v", m)
	}
	if c.Linux.Resources != nil || c.Linux.CgroupsPath != "" {
		t.Errorf("cgroups without delegation: %+v %q", c.Linux.Resources, c.Linux.CgroupsPath)
	}
	for _, m := range c.Mounts {
		for _, o := range m.Options {
			if strings.HasPrefix(o, "uid=") || strings.HasPrefix(o, "gid=") {
				t.Errorf("mount %s has %s", m.Destination, o)
			}
		}
	}
	if rl := c.Process.Rlimits[0]; rl.Type != "RLIMIT_NOFILE" || rl.Hard != 4096 || rl.Soft != 4096 {
		t.Errorf("rlimit %+v", rl)
	}
	// What does not change.
	caps := c.Process.Capabilities
	if !c.Process.NoNewPrivileges || len(caps.Bounding)+len(caps.Effective)+len(caps.Permitted)+len(caps.Inheritable)+len(caps.Ambient) != 0 {
		t.Errorf("capabilities %+v, no_new_privs %v", caps, c.Process.NoNewPrivileges)
	}
	if !c.Root.Readonly || c.Root.Path != "/rootfs" || !slices.Equal(c.Process.Args, root.Process.Args) || len(c.Mounts) != len(root.Mounts) {
		t.Errorf("root %+v, args %v, %d mounts", c.Root, c.Process.Args, len(c.Mounts))
	}
	if !slices.Equal(c.Linux.MaskedPaths, root.Linux.MaskedPaths) || !slices.Equal(c.Linux.ReadonlyPaths, root.Linux.ReadonlyPaths) {
		t.Error("masked or read-only paths differ from root's")
	}
	if m := mount(c, sandboxRunDir); m == nil || m.Source != "/run-dir" {
		t.Errorf("run dir mount %+v", m)
	}
	// The root configuration is not changed by building a rootless one.
	if m := mount(ociConfig(testSpec(false)), "/run"); !slices.Contains(m.Options, "uid=200003") {
		t.Errorf("root /run %+v", m)
	}

	// A delegated cgroup: limits, in a cgroup under it.
	s := testSpec(true)
	s.Cgroups = "/user.slice/user-999.slice/user@999.service/app.slice"
	c = ociConfig(s)
	if r := c.Linux.Resources; r == nil || r.Memory == nil || r.CPU == nil || r.Pids == nil || r.Devices != nil {
		t.Errorf("delegated resources %+v", r)
	}
	if c.Linux.CgroupsPath != s.Cgroups+"/mse-node-app1" {
		t.Errorf("delegated cgroups path %q", c.Linux.CgroupsPath)
	}
}

func TestDelegatedIn(t *testing.T) {
	root := t.TempDir()
	slice := "/user.slice/user-999.slice/user@999.service/app.slice"
	dir := filepath.Join(root, slice)
	if err := os.MkdirAll(filepath.Join(dir, "mse.service"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"cgroup.procs", "cgroup.subtree_control"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	self := []byte("0::" + slice + "/mse.service\n")
	for _, tc := range []struct {
		proc, controllers, want, why string
	}{
		{string(self), "cpu memory pids io", slice, ""},
		{string(self), "memory pids", "", "without the cpu controller"},
		{"0::/mse.service\n", "cpu memory pids", "", "is the root"},
		{"0::/\n", "cpu memory pids", "", "not in a cgroup v2 subtree"},
		{"4:memory:/x\n", "cpu memory pids", "", "not in a cgroup v2 subtree"},
	} {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(tc.controllers+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		got, why := delegatedIn(root, []byte(tc.proc), 999)
		if got != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("%q with %q: %q, %q; want %q, %q", tc.proc, tc.controllers, got, why, tc.want, tc.why)
		}
	}
}
