//go:build !linux

package appserver

import "errors"

// groupRSS is not measured on this platform: processes are not retired for
// their memory.
func groupRSS(int) (int64, error) {
	return 0, errors.New("appserver: resident memory is only measured on Linux")
}
