package auth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

// EnvServiceSubjects names the Events API's service subjects: a
// comma-separated list of token subjects that are services even without
// the scope ScopeService. Unset, it is the local identity (the default
// subject of `bus operator token issue --local`), so a one-machine set-up
// whose tokens all come from that command keeps working; set to the empty
// string, no subject is a service by name and only tokens carrying
// ScopeService are.
const EnvServiceSubjects = "BUS_EVENTS_SERVICE_SUBJECTS"

// ServicePolicy decides which principals are services: a token carrying
// the scope ScopeService, or one whose subject is listed in Subjects. The
// zero value recognises services by the scope only.
type ServicePolicy struct {
	// Subjects are token subjects treated as services.
	Subjects []string
}

// IsService reports whether the principal of c is a service.
func (p ServicePolicy) IsService(c *Claims) bool {
	if c == nil {
		return false
	}
	return c.HasScope(ScopeService) || slices.Contains(p.Subjects, c.Subject)
}

// ServicePolicyFromEnv reads EnvServiceSubjects. When it is unset the
// policy lists the local identity (created under the Bus configuration
// root on first use, as the token issuer does); when it is set, its
// comma-separated subjects (none when empty).
func ServicePolicyFromEnv(env busconfig.Env) (ServicePolicy, error) {
	var (
		v  string
		ok bool
	)
	if env != nil {
		v, ok = env(EnvServiceSubjects)
	}
	if !ok {
		id, err := busconfig.LocalIdentity(env)
		if err != nil {
			return ServicePolicy{}, fmt.Errorf("%s is unset and the local identity is unavailable: %w", EnvServiceSubjects, err)
		}
		return ServicePolicy{Subjects: []string{id}}, nil
	}
	var p ServicePolicy
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(p.Subjects, s) {
			p.Subjects = append(p.Subjects, s)
		}
	}
	return p, nil
}
