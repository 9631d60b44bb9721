// Grafana's own types for what the monitoring kit's dashboard holds, as JSON has it.
// @grafana/schema's version is the Grafana that monitoring/compose.yaml runs.
import type { Dashboard as GrafanaDashboard } from "@grafana/schema";
import type {
  FieldConfig,
  Options,
} from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.js";

// Grafana declares its enums as TypeScript enums; in JSON their members are plain values.
type Json<T> = T extends string ? `${T}` : T extends object ? { [K in keyof T]: Json<T[K]> } : T;

export type Dashboard = Json<GrafanaDashboard>;
// Panels carry their plugin's options and custom field settings untyped; these type them.
export type TimeSeriesOptions = Json<Options>;
export type TimeSeriesFieldConfig = Json<FieldConfig>;
