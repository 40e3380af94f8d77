import { describe, expect, it } from "vitest";

import { CT_PRESETS, automaticRange, initialPreset, presetRange } from "./presets";

describe("window presets", () => {
  it("turns centre and width into a range", () => {
    const brain = CT_PRESETS.find((p) => p.id === "brain")!;
    expect(presetRange(brain)).toEqual({ lower: 0, upper: 80 });
    expect(presetRange(CT_PRESETS[0])).toEqual({ lower: -160, upper: 240 });
  });

  it("opens CT with soft tissue and everything else automatically", () => {
    expect(initialPreset("CT")).toBe(CT_PRESETS[0]);
    expect(initialPreset("MR")).toBe("auto");
    expect(initialPreset("PT")).toBe("auto");
  });

  it("takes percentiles of the non-zero values", () => {
    // A background of zeros and values 1…1000: the zeros do not pull the window down.
    const values = new Float32Array(3000);
    for (let n = 0; n < 1000; n++) values[2000 + n] = n + 1;
    const range = automaticRange(values);
    expect(range.lower).toBeGreaterThanOrEqual(10);
    expect(range.lower).toBeLessThanOrEqual(12);
    expect(range.upper).toBeGreaterThanOrEqual(994);
    expect(range.upper).toBeLessThanOrEqual(996);
  });

  it("gives a usable window for empty or constant data", () => {
    expect(automaticRange(new Int16Array(10))).toEqual({ lower: 0, upper: 1 });
    expect(automaticRange(new Int16Array(10).fill(7))).toEqual({ lower: 7, upper: 8 });
  });
});
