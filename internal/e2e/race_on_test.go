//go:build race

package e2e_test

// raceEnabled: the test binary is built with -race, so the commands of the
// script test are too (sharing the build cache and checking them for races).
const raceEnabled = true
