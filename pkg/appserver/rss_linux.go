//go:build linux

package appserver

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// groupRSS returns the resident memory, in bytes, of every process in the
// process group pgid (the command and, with the npm launcher, the native
// binary it starts), read from /proc.
func groupRSS(pgid int) (int64, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("appserver: read /proc: %w", err)
	}
	page := int64(os.Getpagesize())
	var total int64
	found := false
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ... ; comm may hold spaces: cut at ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 22 {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err != nil || g != pgid {
			continue
		}
		rss, err := strconv.ParseInt(f[21], 10, 64) // field 24: rss in pages
		if err != nil {
			continue
		}
		found = true
		total += rss * page
	}
	if !found {
		return 0, fmt.Errorf("appserver: no process in group %d", pgid)
	}
	return total, nil
}
