// The dashboard page (dashboard.html, compiled in by a genrule): plain HTML,
// inline JavaScript and SVG, nothing fetched from anywhere but the
// coordinator's own JSON API.
#ifndef MODAMBA_COORDINATOR_DASHBOARD_H_
#define MODAMBA_COORDINATOR_DASHBOARD_H_

namespace modamba {

extern const char kDashboardHtml[];

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_DASHBOARD_H_
