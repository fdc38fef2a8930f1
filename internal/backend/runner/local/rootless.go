package local

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// rootless is how the runner sandboxes nodes when it is not root
// (docs/runtimes.md "Without root"): runc's rootless mode, a user namespace
// per node mapping the node's UID inside to the runner's own UID (one ID:
// newuidmap and /etc/subuid ranges are not used), and cgroup limits only in
// a delegated cgroup v2 subtree.
type rootless struct {
	uid, gid int
	nofile   uint64 // the runner's hard RLIMIT_NOFILE
	cgroups  string // delegated cgroup v2 parent of the nodes' cgroups ("" = none)
	why      string // why there are no cgroup limits
}

// cgroupRoot is where the unified cgroup hierarchy is mounted.
var cgroupRoot = "/sys/fs/cgroup"

// newRootless checks that this process may create user namespaces and
// finds what a rootless sandbox can have.
func newRootless(runc string, log *slog.Logger) (*rootless, error) {
	rl := &rootless{uid: os.Geteuid(), gid: os.Getegid()}
	if err := userNamespacesWork(runc, log); err != nil {
		return nil, err
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		rl.nofile = lim.Max
	}
	rl.cgroups, rl.why = delegatedCgroup(rl.uid)
	return rl, nil
}

// userNamespacesWork starts runc --version in a new user namespace (the
// standard library's clone, mapping this UID), which is what runc itself
// will need, and explains what to change when that fails.
func userNamespacesWork(runc string, log *slog.Logger) error {
	const what = "local runner: not root, so each node needs a user namespace"
	for _, s := range []struct{ file, bad, fix string }{
		{"/proc/sys/user/max_user_namespaces", "0", "sysctl -w user.max_user_namespaces=15000"},
		{"/proc/sys/kernel/unprivileged_userns_clone", "0", "sysctl -w kernel.unprivileged_userns_clone=1"},
	} {
		if b, err := os.ReadFile(s.file); err == nil && strings.TrimSpace(string(b)) == s.bad {
			return fmt.Errorf("%s, and this machine does not let unprivileged users create them (%s is %s): run mse-backend as root, or allow them (%s)",
				what, s.file, s.bad, s.fix)
		}
	}
	cmd := exec.Command(runc, "--version")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s, and creating one failed (%v%s): run mse-backend as root, or allow unprivileged user namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone; on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for runc)",
			what, err, trimOut(out))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"); err == nil && strings.TrimSpace(string(b)) == "1" {
		// Creating one works, but its processes may lack the capabilities runc
		// needs inside: say so now rather than in each node's log.
		log.Warn("kernel.apparmor_restrict_unprivileged_userns=1: runc may be refused inside its user namespace unless an AppArmor profile allows it; if nodes fail to start, set it to 0 or run mse-backend as root")
	}
	return nil
}

func trimOut(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return ": " + s
}

// delegatedCgroup finds a cgroup v2 subtree delegated to uid, in which runc
// can create the nodes' cgroups with memory, CPU and PID limits; see
// delegatedIn.
func delegatedCgroup(uid int) (parent, why string) {
	var fs unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &fs); err != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return "", "this machine uses cgroup v1 (runc cannot delegate it to a user)"
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "cannot read /proc/self/cgroup"
	}
	return delegatedIn(cgroupRoot, b, uid)
}

// delegatedIn: in the cgroup v2 hierarchy at root, given this process's
// /proc/self/cgroup, the nodes' cgroups can go under the parent of this
// process's cgroup (its own holds a process, so it cannot enable
// controllers for children) when that parent is writable by uid (to create
// cgroups and move processes into them) and has memory, cpu and pids
// enabled for its children. It returns that parent relative to root
// ("/user.slice/…"), or "" and why not.
func delegatedIn(root string, procCgroup []byte, uid int) (parent, why string) {
	var own string
	sc := bufio.NewScanner(bytes.NewReader(procCgroup))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			own = p
		}
	}
	if own == "" || own == "/" {
		return "", "this process is not in a cgroup v2 subtree"
	}
	parent = filepath.Dir(own)
	if parent == "/" {
		return "", fmt.Sprintf("the cgroup above this process's (%s) is the root", own)
	}
	dir := filepath.Join(root, parent)
	for _, f := range []string{dir, filepath.Join(dir, "cgroup.procs")} {
		if err := unix.Access(f, unix.W_OK); err != nil {
			return "", fmt.Sprintf("cgroup %s is not delegated to uid %d (%s not writable)", parent, uid, filepath.Base(f))
		}
	}
	sub, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return "", fmt.Sprintf("cgroup %s: %v", parent, err)
	}
	have := map[string]bool{}
	for _, c := range strings.Fields(string(sub)) {
		have[c] = true
	}
	var missing []string
	for _, c := range []string{"memory", "cpu", "pids"} {
		if !have[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Sprintf("cgroup %s is delegated without the %s controller(s)", parent, strings.Join(missing, ", "))
	}
	return parent, ""
}

// logOnce says, once per runner, what running without root changes.
func (rl *rootless) logOnce(log *slog.Logger) {
	limits := "memory, CPU and PID limits per node (cgroup " + rl.cgroups + ", delegated)"
	if rl.cgroups == "" {
		limits = "NO memory, CPU or PID limits per node: " + rl.why + "; only the tmpfs sizes and RLIMIT_NOFILE bound a node"
	}
	log.Warn("not root: sandboxes are rootless (runc --rootless, a user namespace per node)",
		"host_uid", rl.uid,
		"changes", fmt.Sprintf("every node runs as host UID %d (this process's; seen inside as its own UID, mapped alone), so nodes are kept apart by their namespaces only, not by UIDs", rl.uid),
		"limits", limits,
		"to_change", "run mse-backend as root for a host UID and cgroup limits per node")
}

// apply adapts one node's sandbox to rootless operation.
func (rl *rootless) apply(s *sandboxSpec) {
	s.Rootless = true
	s.HostUID, s.HostGID = rl.uid, rl.gid
	s.Cgroups = rl.cgroups
	s.NoFile = rl.nofile
}
