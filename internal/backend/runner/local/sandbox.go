package local

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Inside a sandbox (docs/runtimes.md "Sandbox"):
//
//	/                the runtime's root filesystem, read-only
//	/run             a private tmpfs: /run/work holds the code, secrets and HOME
//	/run/mse         the node's run directory, shared with the runner: the
//	                 spec, the status file, the node's socket (the router
//	                 dials it) and the quoting service's socket
//	/tmp, /dev/shm   private tmpfs
//
// The node binary is descriptor 4 (a sealed memfd: the bytes the runner
// measured), the encrypted bundle descriptor 3 (read-only).
const (
	sandboxRunDir  = "/run/mse"
	sandboxWorkDir = "/run/work"
	bundleFD       = 3
	nodeFD         = 4
)

// sealedCopy copies the executable at path into a sealed memfd and returns
// it with its SHA-256: the runner measures and executes these same bytes,
// whatever happens to the file afterwards.
func sealedCopy(path string) (*os.File, [32]byte, error) {
	var sum [32]byte
	src, err := os.Open(path)
	if err != nil {
		return nil, sum, err
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("mse-node", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, sum, fmt.Errorf("memfd_create: %w", err)
	}
	mf := os.NewFile(uintptr(fd), "mse-node")
	if _, err := io.Copy(mf, src); err != nil {
		mf.Close()
		return nil, sum, err
	}
	if _, err := unix.FcntlInt(mf.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
		mf.Close()
		return nil, sum, fmt.Errorf("seal the node binary: %w", err)
	}
	// Measure what was sealed, read back from the memfd itself.
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(mf, 0, 1<<40)); err != nil {
		mf.Close()
		return nil, sum, err
	}
	copy(sum[:], h.Sum(nil))
	return mf, sum, nil
}

// sandboxSpec is what one node's sandbox gets.
type sandboxSpec struct {
	AppID     string
	Rootfs    string // the runtime's extracted root filesystem (read-only)
	RunDir    string // host side of /run/mse
	UID       int
	MemoryMiB int64
	Cores     int
	Args      []string // the node's arguments (after the program)
	// Rootless: the runner is not root. The sandbox gets its own user
	// namespace in which UID 0 maps to HostUID (GID 0 to HostGID), one ID;
	// UID is then only the runner's bookkeeping;
	// no cgroup limits unless Cgroups (a delegated cgroup v2 parent, the
	// absolute cgroupsPath prefix) is set; RLIMIT_NOFILE is at most NoFile.
	Rootless         bool
	HostUID, HostGID int
	Cgroups          string
	NoFile           uint64
}

// ociConfig builds the OCI runtime configuration of a node's sandbox: its
// own UID, no capabilities, no new privileges, its own mount, PID, network,
// IPC and UTS namespaces, the runtime read-only, memory, CPU and PID limits.
// Rootless, it adds a user namespace mapping the node's UID to the runner's
// and leaves out the cgroup limits the runner cannot set (rootlessConfig).
func ociConfig(s sandboxSpec) *specs.Spec {
	c := rootConfig(s)
	if s.Rootless {
		rootlessConfig(c, s)
	}
	return c
}

// rootlessConfig adapts a sandbox's configuration to a runner without root
// (runc --rootless; compare `runc spec --rootless`):
//
//   - a user namespace in which UID 0 (and GID 0) maps to the runner's own
//     UID, one ID only (an unprivileged process may map only itself, and
//     runc needs a root inside to set the sandbox up). The node runs as that
//     UID 0, with no capabilities at all (every set empty, the bounding set
//     too) and no_new_privs: it has no privilege over anything, its user
//     namespace included; on the host it is the runner's UID;
//   - no supplementary groups (setgroups is denied in such a namespace);
//   - the tmpfs mounts without uid=/gid= options (their owner is the
//     namespace's root, the node);
//   - cgroup limits only in a delegated cgroup: runc cannot create or join
//     others, and refuses limits it cannot apply;
//   - RLIMIT_NOFILE no higher than the runner's own hard limit (raising it
//     needs CAP_SYS_RESOURCE on the host).
//
// The other namespaces are owned by the new user namespace, so /proc, /sys
// (the node's own network namespace) and devpts mount as under root.
func rootlessConfig(c *specs.Spec, s sandboxSpec) {
	c.Process.User = specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{}}
	c.Linux.Namespaces = append(c.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	c.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: uint32(s.HostUID), Size: 1}}
	c.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: uint32(s.HostGID), Size: 1}}
	for i := range c.Mounts {
		if m := &c.Mounts[i]; m.Type == "tmpfs" {
			m.Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool {
				return strings.HasPrefix(o, "uid=") || strings.HasPrefix(o, "gid=")
			})
		}
	}
	if s.Cgroups == "" {
		c.Linux.Resources = nil
		c.Linux.CgroupsPath = ""
	} else {
		c.Linux.Resources.Devices = nil // the devices controller is v1-only; runc applies its defaults
		c.Linux.CgroupsPath = s.Cgroups + "/mse-node-" + s.AppID
	}
	for i := range c.Process.Rlimits {
		if rl := &c.Process.Rlimits[i]; rl.Type == "RLIMIT_NOFILE" && s.NoFile > 0 && rl.Hard > s.NoFile {
			rl.Hard, rl.Soft = s.NoFile, s.NoFile
		}
	}
}

// rootConfig is the sandbox's configuration under root.
func rootConfig(s sandboxSpec) *specs.Spec {
	mem := s.MemoryMiB << 20
	tmpfs := func(dst, size string, extra ...string) specs.Mount {
		return specs.Mount{Destination: dst, Type: "tmpfs", Source: "tmpfs",
			Options: append([]string{"nosuid", "nodev", "size=" + size}, extra...)}
	}
	uid := uint32(s.UID)
	quota := int64(s.Cores) * 100000
	period := uint64(100000)
	pids := int64(4096)
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: "mse-node",
		Root:     &specs.Root{Path: s.Rootfs, Readonly: true},
		Process: &specs.Process{
			User: specs.User{UID: uid, GID: uid, AdditionalGids: []uint32{}},
			Args: append([]string{fmt.Sprintf("/proc/self/fd/%d", nodeFD)}, s.Args...),
			// Nothing from the host's environment: the node sets the app's.
			Env:             []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + sandboxWorkDir},
			Cwd:             "/",
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{Bounding: []string{}, Effective: []string{}, Inheritable: []string{}, Permitted: []string{}, Ambient: []string{}},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 8192, Soft: 8192}, {Type: "RLIMIT_CORE", Hard: 0, Soft: 0}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			// Enclave memory: code, secrets and HOME live here, counted
			// against the memory limit, gone when the node ends.
			tmpfs("/run", strconv.FormatInt(mem, 10), "mode=700", fmt.Sprintf("uid=%d", s.UID), fmt.Sprintf("gid=%d", s.UID)),
			{Destination: sandboxRunDir, Type: "bind", Source: s.RunDir, Options: []string{"rbind", "nosuid", "nodev", "noexec"}},
			tmpfs("/tmp", strconv.FormatInt(mem, 10), "mode=1777"),
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Memory:  &specs.LinuxMemory{Limit: &mem},
				CPU:     &specs.LinuxCPU{Quota: &quota, Period: &period},
				Pids:    &specs.LinuxPids{Limit: pids},
			},
			CgroupsPath: "mse-node-" + s.AppID,
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
				"/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

// writeBundle writes the OCI bundle (config.json) of a node into dir.
func writeBundle(dir string, s sandboxSpec) error {
	b, err := json.MarshalIndent(ociConfig(s), "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600)
}
