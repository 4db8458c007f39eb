package bench

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes the computer a run measured.
type Machine struct {
	CPU          string `json:"cpu"`
	Cores        int    `json:"cores"`
	GOMAXPROCS   int    `json:"gomaxprocs"`
	MemTotalMiB  int64  `json:"mem_total_mib"`
	Kernel       string `json:"kernel"`
	OS           string `json:"os"`
	GoVersion    string `json:"go_version"`
	Platform     string `json:"platform"`
	CodexVersion string `json:"codex_version,omitempty"`
	// Commit is the measured code's git commit ("+dirty" with local
	// changes).
	Commit string `json:"commit,omitempty"`
	// LoadAvgStart and LoadAvgEnd are /proc/loadavg's 1, 5 and 15 minute
	// load averages when the run started and ended: other work on the
	// machine shows here.
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
}

func describeMachine(ctx context.Context, codexCommand string) Machine {
	m := Machine{
		CPU:          cpuModel(),
		Cores:        runtime.NumCPU(),
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
		Kernel:       strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		OS:           osName(),
		GoVersion:    runtime.Version(),
		Platform:     runtime.GOOS + "/" + runtime.GOARCH,
		LoadAvgStart: loadAvg(),
	}
	if kb, ok := meminfo("MemTotal"); ok {
		m.MemTotalMiB = kb / 1024
	}
	if codexCommand != "" {
		m.CodexVersion = codexVersion(ctx, codexCommand)
	}
	m.Commit = gitCommit(ctx)
	return m
}

func gitCommit(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	commit := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		commit += "+dirty"
	}
	return commit
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

func cpuModel() string {
	for line := range strings.SplitSeq(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func osName() string {
	for line := range strings.SplitSeq(readFile("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return runtime.GOOS
}

func loadAvg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// meminfo returns a /proc/meminfo value in kB.
func meminfo(key string) (int64, bool) {
	for line := range strings.SplitSeq(readFile("/proc/meminfo"), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func codexVersion(ctx context.Context, command string) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, command, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// procMem is a process's resident memory, from /proc/<pid>/status.
type procMem struct {
	rssKB, hwmKB int64
}

func readProcMem(pid int) (procMem, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return procMem{}, false
	}
	var m procMem
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.rssKB = n
		case "VmHWM":
			m.hwmKB = n
		}
	}
	return m, true
}

// procInfo is one process of a tree.
type procInfo struct {
	pid  int
	comm string
}

// procStat is what /proc/<pid>/stat says of a process.
type procStat struct {
	comm        string
	ppid, pgrp  int
	zombie      bool
	cpu         time.Duration // utime+stime
	childrenCPU time.Duration // cutime+cstime: its children it has waited for
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100
// on every Linux platform Go supports).
const userHZ = 100

func readProcStat(pid int) (procStat, bool) {
	stat := readFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	lp, rp := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if lp < 0 || rp < lp {
		return procStat{}, false
	}
	// Fields after the parenthesised comm: state ppid pgrp ... utime(11)
	// stime(12) cutime(13) cstime(14).
	f := strings.Fields(stat[rp+1:])
	if len(f) < 15 {
		return procStat{}, false
	}
	n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	tick := func(v int64) time.Duration { return time.Duration(v) * time.Second / userHZ }
	return procStat{
		comm: stat[lp+1 : rp], ppid: int(n(1)), pgrp: int(n(2)), zombie: f[0] == "Z",
		cpu: tick(n(11) + n(12)), childrenCPU: tick(n(13) + n(14)),
	}, true
}

// procTable reads every process of /proc.
func procTable() map[int]procStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := map[int]procStat{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readProcStat(pid); ok {
			out[pid] = st
		}
	}
	return out
}

// descendants returns every live descendant of root, found by walking
// the parent links of /proc/*/stat (the npm codex launcher's native child
// included).
func descendants(root int) []procInfo {
	table := procTable()
	var out []procInfo
	for pid, st := range table {
		for p := st.ppid; p > 1; p = table[p].ppid {
			if p == root {
				out = append(out, procInfo{pid: pid, comm: st.comm})
				break
			}
		}
	}
	return out
}

// groupMembers returns the live processes of process group pgid.
func groupMembers(pgid int) []int {
	var out []int
	for pid, st := range procTable() {
		if st.pgrp == pgid && !st.zombie {
			out = append(out, pid)
		}
	}
	return out
}

// cpuOf is the CPU time the processes pids have used, with that of the
// children each has waited for (so a short-lived helper an App Server ran
// and reaped counts; a process still running counts once, as itself).
func cpuOf(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		if st, ok := readProcStat(pid); ok {
			sum += st.cpu + st.childrenCPU
		}
	}
	return sum
}

// rssOf is the resident memory of the processes pids (kB).
func rssOf(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		if m, ok := readProcMem(pid); ok {
			sum += m.rssKB
		}
	}
	return sum
}
