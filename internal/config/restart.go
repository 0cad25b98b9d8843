package config

// startOnlyKeys are the keys the daemon uses only at start: the serial line's settings (the
// port is held open by the AT client made at start), the store and socket paths (open files),
// and the log's format (the logger is built once; its level follows reloads).
func startOnlyKeys() map[string]bool {
	return map[string]bool{
		"modem.port": true, "modem.baud": true, "modem.flow_control": true, "modem.line_ending": true,
		"modem.command_timeout": true, "modem.long_command_timeout": true, "modem.trace_at": true,
		"store.path": true, "control.socket": true, "log.format": true,
	}
}

func markRestart(keys []KeyInfo) []KeyInfo {
	start := startOnlyKeys()
	for i := range keys {
		keys[i].Restart = start[keys[i].Key]
	}
	return keys
}

// RestartNeeded names, in table order, the keys that differ between old and cur and take
// effect only after a restart.
func RestartNeeded(old, cur *Config) []string {
	var keys []string
	for _, k := range Keys() {
		if k.Restart && k.format(old) != k.format(cur) {
			keys = append(keys, k.Key)
		}
	}
	return keys
}
