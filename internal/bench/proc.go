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

// descendants returns every live descendant of root, found by walking
// the parent links of /proc/*/stat (the npm codex launcher's native child
// included).
func descendants(root int) []procInfo {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	comm := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat := readFile(filepath.Join("/proc", e.Name(), "stat"))
		lp, rp := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(stat[rp+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		parent[pid] = ppid
		comm[pid] = stat[lp+1 : rp]
	}
	var out []procInfo
	for pid := range parent {
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == root {
				out = append(out, procInfo{pid: pid, comm: comm[pid]})
				break
			}
		}
	}
	return out
}
