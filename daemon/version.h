// vfiod's version: `vfiod --version`, DeviceInfo.daemon_version. Raised with every release of
// the wire contract or the daemon's behaviour that a user can see.
#ifndef VFIOD_DAEMON_VERSION_H_
#define VFIOD_DAEMON_VERSION_H_

namespace vfiod {

inline constexpr char kVfiodVersion[] = "0.3.0";

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VERSION_H_
