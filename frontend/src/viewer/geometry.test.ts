import { describe, expect, it } from "vitest";

import {
  type DicomJson,
  type Geometry,
  type Vec3,
  geometryDifference,
  geometryFromInstances,
  isInside,
  orientationLetters,
  viewportMarkers,
  volumeShape,
  voxelToWorld,
  worldToContinuousVoxel,
  worldToVoxel,
} from "./geometry";

// An asymmetric grid: 4 columns, 3 rows, 2 slices, anisotropic spacing, rotated 30° about S, shifted origin.
const c = Math.cos(Math.PI / 6);
const s = Math.sin(Math.PI / 6);
const oblique: Geometry = {
  dimensions: [4, 3, 2],
  spacing: [0.5, 0.75, 2.5],
  origin: [10, -20, 30],
  direction: [c, s, 0, -s, c, 0, 0, 0, 1],
};

function close(a: number[], b: number[]): void {
  expect(a.length).toBe(b.length);
  a.forEach((v, n) => expect(v).toBeCloseTo(b[n], 9));
}

describe("voxel <-> world", () => {
  it("puts voxel (0, 0, 0) at the origin and steps along each axis by its spacing", () => {
    close(voxelToWorld(oblique, [0, 0, 0]), [10, -20, 30]);
    close(voxelToWorld(oblique, [0, 0, 1]), [10 + 0.5 * c, -20 + 0.5 * s, 30]); // i: row cosine
    close(voxelToWorld(oblique, [0, 1, 0]), [10 - 0.75 * s, -20 + 0.75 * c, 30]); // j: column cosine
    close(voxelToWorld(oblique, [1, 0, 0]), [10, -20, 32.5]); // k: normal
  });

  it("round-trips every voxel exactly, and continuous points too", () => {
    const [nk, nj, ni] = volumeShape(oblique);
    expect([nk, nj, ni]).toEqual([2, 3, 4]);
    for (let k = 0; k < nk; k++)
      for (let j = 0; j < nj; j++)
        for (let i = 0; i < ni; i++) {
          const world = voxelToWorld(oblique, [k, j, i]);
          expect(worldToVoxel(oblique, world)).toEqual([k, j, i]);
        }
    close(worldToContinuousVoxel(oblique, voxelToWorld(oblique, [0.25, 1.5, 2.75])), [0.25, 1.5, 2.75]);
  });

  it("rounds to the containing voxel and refuses points outside", () => {
    const inside = voxelToWorld(oblique, [1.4, 0.4, 3.4]);
    expect(worldToVoxel(oblique, inside)).toEqual([1, 0, 3]);
    expect(worldToVoxel(oblique, voxelToWorld(oblique, [0, 0, 3.6]))).toBeNull();
    expect(worldToVoxel(oblique, voxelToWorld(oblique, [-0.6, 0, 0]))).toBeNull();
    expect(isInside(oblique, [1, 2, 3])).toBe(true);
    expect(isInside(oblique, [2, 0, 0])).toBe(false);
  });
});

function instance(position: Vec3, orientation: number[], extra: DicomJson = {}): DicomJson {
  return {
    "00200032": { vr: "DS", Value: position },
    "00200037": { vr: "DS", Value: orientation },
    "00280030": { vr: "DS", Value: [0.8, 0.6] }, // rows 0.8 mm apart, columns 0.6 mm
    "00280010": { vr: "US", Value: [3] },
    "00280011": { vr: "US", Value: [4] },
    ...extra,
  };
}

describe("geometryFromInstances", () => {
  it("sorts axial slices along +S and takes spacing as (Δi, Δj, Δk)", () => {
    const axial = [1, 0, 0, 0, 1, 0];
    const slices = [instance([0, 0, 5], axial), instance([0, 0, -5], axial), instance([0, 0, 0], axial)];
    const { geometry, sorted } = geometryFromInstances(slices);
    expect(sorted.map((d) => (d["00200032"]!.Value as number[])[2])).toEqual([-5, 0, 5]);
    expect(geometry.dimensions).toEqual([4, 3, 3]);
    close(geometry.spacing, [0.6, 0.8, 5]);
    close(geometry.origin, [0, 0, -5]);
    close(geometry.direction, [1, 0, 0, 0, 1, 0, 0, 0, 1]);
  });

  it("sorts the sagittal decubitus MR along its normal −L: k = 0 is furthest to the patient's left", () => {
    const sagittal = [0, 1, 0, 0, 0, -1]; // rows run to P, columns to I: normal P × I = −L (towards R)
    const slices = [instance([-10, 0, 0], sagittal), instance([10, 0, 0], sagittal), instance([0, 0, 0], sagittal)];
    const { geometry } = geometryFromInstances(slices);
    close(geometry.origin, [10, 0, 0]);
    close(geometry.direction.slice(6), [-1, 0, 0]);
    // One voxel along i moves 0.6 mm posterior, one along j 0.8 mm inferior, one along k 10 mm right.
    close(voxelToWorld(geometry, [1, 1, 1]), [0, 0.6, -0.8]);
  });

  it("compares grids", () => {
    const shifted = { ...oblique, origin: [10.001, -20, 30] as Vec3 };
    expect(geometryDifference(oblique, shifted)).toBeCloseTo(0.001, 9);
    expect(geometryDifference(oblique, { ...oblique, dimensions: [4, 3, 3] })).toBe(Infinity);
  });
});

describe("orientation letters", () => {
  it("names the main axes and combines oblique ones, strongest first", () => {
    expect(orientationLetters([1, 0, 0])).toBe("L");
    expect(orientationLetters([-1, 0, 0])).toBe("R");
    expect(orientationLetters([0, -1, 0])).toBe("A");
    expect(orientationLetters([0, 0, -2])).toBe("I");
    expect(orientationLetters([-0.8, -0.6, 0])).toBe("RA");
    expect(orientationLetters([0.5, 0, 0.866])).toBe("SL");
    expect(orientationLetters([0.99, 0.1, 0])).toBe("L"); // slightly oblique: one letter
  });

  it("gives the radiological conventions for Cornerstone's default cameras", () => {
    // Axial: seen from the feet (the normal points to the camera: −S), anterior up.
    expect(viewportMarkers([0, -1, 0], [0, 0, -1])).toEqual({ top: "A", bottom: "P", left: "R", right: "L" });
    // Sagittal: camera at the patient's left, superior up, anterior on the left.
    expect(viewportMarkers([0, 0, 1], [1, 0, 0])).toEqual({ top: "S", bottom: "I", left: "A", right: "P" });
    // Coronal: camera in front of the patient, superior up, the patient's right on the left.
    expect(viewportMarkers([0, 0, 1], [0, -1, 0])).toEqual({ top: "S", bottom: "I", left: "R", right: "L" });
  });

  it("follows a rotated camera", () => {
    // Axial view rotated 45° in plane: up is between A and L.
    const h = Math.SQRT1_2;
    const markers = viewportMarkers([h, -h, 0], [0, 0, -1]);
    expect(markers.top).toMatch(/^(AL|LA)$/);
    expect(markers.bottom).toMatch(/^(PR|RP)$/);
  });
});
