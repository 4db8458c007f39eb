//go:build !race

package e2e_test

// raceEnabled: the test binary is built without -race.
const raceEnabled = false
