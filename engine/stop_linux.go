package engine

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// queueStops sends SIGSTOP to every process that was in a group stop at
// dump time. It runs after the last injected call and before the detach:
// the signal stays pending while the task is in its ptrace stop (SIGSTOP
// cannot be blocked, and a traced task is not woken by it), so the first
// thing a detached task does is enter the group stop again, before running
// a single user instruction. A later SIGCONT resumes it, as it would have
// resumed the original. Its parent sees a new CLD_STOPPED notification
// (SIGCHLD, waitpid WUNTRACED), as for any stop.
func (r *restorer) queueStops() error {
	for _, rt := range r.tasks {
		if !rt.rec.Stopped || rt.rec.Zombie {
			continue
		}
		if err := unix.Kill(rt.hostPid, unix.SIGSTOP); err != nil {
			return fmt.Errorf("pid %d: stop it again: %w", rt.rec.Pid, err)
		}
	}
	return nil
}
