package harness

// KillCgroupTree kills every process in cgroups at or below /<top> and removes those cgroups:
// for containers whose spec names a cgroup outside their daemon's namespace (a checkpoint
// restored on another daemon keeps the cgroup path of the daemon it was taken on).
func KillCgroupTree(top string) error { return killCgroupTree(top) }
